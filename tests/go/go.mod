module geerpc.test/gopeer

go 1.19
