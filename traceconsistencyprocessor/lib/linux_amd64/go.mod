module github.com/traceconsistency/traceconsistencyprocessor/lib/linux_amd64

go 1.26.0
