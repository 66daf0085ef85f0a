// Command gopeer is a GeeRPC peer written for geerpc's interop tests
// (tests/go_interop.rs): a server and a client that speak the wire
// contract of PROTOCOL.md with Go's own encoding/gob and encoding/json,
// the way the two public Go GeeRPC versions do. It is not either
// version's code: it keeps their wire behaviour (the Option read through a
// throw-away json.Decoder, exact CONNECT status texts, error replies with
// an empty struct body, the handle timeout answered at its deadline) and
// leaves out what a test does not need (reflection, registries).
//
// The two versions differ in three places, each a flag:
//
//	-magic 0x3b3f5c (the article's)  | 0x3bef5c (the original series')
//	-path  /myrpc   (the article's)  | /_geeprc_ (the original's) | /_geerpc_
//	-codec gob (the only codec either ships) | json (the one users add)
//
// Usage:
//
//	gopeer [flags] server
//	gopeer [flags] client CALL...
//
// The server listens on two loopback ports (raw TCP and HTTP CONNECT),
// prints {"tcp":"HOST:PORT","http":"HOST:PORT"} on one stdout line, and
// exits when its stdin closes (so it never outlives the test that started
// it). The client dials -addr once and makes each CALL in order, a JSON
// object {"method":"Arith.Sum","args":{"Num1":1,"Num2":2},"timeout_ms":0},
// printing one JSON line per call: {"method","reply","error","elapsed_ms"}.
package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Magic numbers of the two public versions.
const (
	articleMagic  = 0x3b3f5c
	originalMagic = 0x3bef5c
)

// Content types, as PROTOCOL.md section 2 names them.
var codecTypes = map[string]string{
	"gob":  "application/gob",
	"json": "application/json",
}

// connectedStatus is the status text a server answers a CONNECT on path
// with, and the text a client compares exactly: the article's version
// changed it along with its path.
func connectedStatus(path string) string {
	if path == "/myrpc" {
		return "200 Connected to RPC"
	}
	return "200 Connected to Gee RPC"
}

type config struct {
	magic         int
	codecs        []string
	path          string
	addr          string
	handleTimeout time.Duration
	connTimeout   time.Duration
}

func main() {
	magic := flag.String("magic", "0x3b3f5c", "magic number sent (client) or required (server)")
	codecs := flag.String("codec", "gob", "codec: gob or json (server: a comma-separated list it accepts)")
	path := flag.String("path", "/_geeprc_", "CONNECT path served (server) or sent (client)")
	addr := flag.String("addr", "127.0.0.1:0", "server: listen address for both ports; client: tcp@HOST:PORT or http@HOST:PORT")
	handle := flag.Duration("handle-timeout", 0, "client: the Option's HandleTimeout")
	connect := flag.Duration("connect-timeout", 10*time.Second, "client: the Option's ConnectTimeout, and the dial's limit")
	flag.Parse()

	m, err := strconv.ParseInt(*magic, 0, 64)
	if err != nil {
		fatalf("bad -magic %q: %v", *magic, err)
	}
	cfg := config{
		magic:         int(m),
		path:          *path,
		addr:          *addr,
		handleTimeout: *handle,
		connTimeout:   *connect,
	}
	for _, c := range strings.Split(*codecs, ",") {
		if _, ok := codecTypes[c]; !ok {
			fatalf("bad -codec %q: gob or json", c)
		}
		cfg.codecs = append(cfg.codecs, c)
	}

	switch flag.Arg(0) {
	case "server":
		runServer(cfg)
	case "client":
		os.Exit(runClient(cfg, flag.Args()[1:]))
	default:
		fatalf("usage: gopeer [flags] server | gopeer [flags] client CALL...")
	}
}

func fatalf(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "gopeer: "+format+"\n", args...)
	os.Exit(2)
}
