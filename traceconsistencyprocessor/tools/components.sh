#!/usr/bin/env bash
# Lists, relative to the module directory, the folders holding a component's metadata.yaml.
echo .
echo traceconsistencyconnector
