module github.com/traceconsistency/traceconsistency/traceconsistencyprocessor/lib/linux_amd64

go 1.26.0
