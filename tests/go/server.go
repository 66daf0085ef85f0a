package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

// invalidRequest is the body of every error reply, as in Go GeeRPC: an
// empty struct (gob: a type with no fields; JSON: {}).
var invalidRequest = struct{}{}

func runServer(cfg config) {
	log.SetPrefix("gopeer server: ")
	tcp, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		fatalf("listen %s: %v", cfg.addr, err)
	}
	web, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		fatalf("listen %s: %v", cfg.addr, err)
	}
	go accept(cfg, tcp)
	mux := http.NewServeMux()
	mux.Handle(cfg.path, connectHandler{cfg})
	go func() { _ = http.Serve(web, mux) }()

	line, _ := json.Marshal(map[string]string{"tcp": tcp.Addr().String(), "http": web.Addr().String()})
	fmt.Println(string(line))
	// Stop when the test that started us goes away (its end of the pipe
	// closes), whether or not it remembered to kill us.
	_, _ = io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}

func accept(cfg config, l net.Listener) {
	for {
		conn, err := l.Accept()
		if err != nil {
			log.Println("accept:", err)
			return
		}
		go serveConn(cfg, conn)
	}
}

type connectHandler struct{ cfg config }

func (h connectHandler) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != "CONNECT" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusMethodNotAllowed)
		_, _ = io.WriteString(w, "405 must CONNECT\n")
		return
	}
	conn, _, err := w.(http.Hijacker).Hijack()
	if err != nil {
		log.Println("hijack:", err)
		return
	}
	_, _ = io.WriteString(conn, "HTTP/1.0 "+connectedStatus(h.cfg.path)+"\n\n")
	serveConn(h.cfg, conn)
}

func serveConn(cfg config, conn net.Conn) {
	defer conn.Close()
	// Go GeeRPC's quirk, kept on purpose: the Option is read through a
	// json.Decoder of its own, which reads up to 512 bytes at once and
	// drops whatever followed the Option in them. A client that writes
	// its first request right behind an unpadded Option loses it here.
	var opt Option
	if err := json.NewDecoder(conn).Decode(&opt); err != nil {
		log.Println("options error:", err)
		return
	}
	if opt.MagicNumber != cfg.magic {
		log.Printf("invalid magic number %x", opt.MagicNumber)
		return
	}
	name := ""
	for _, c := range cfg.codecs {
		if codecTypes[c] == opt.CodecType {
			name = c
		}
	}
	if name == "" {
		log.Printf("invalid codec type %s", opt.CodecType)
		return
	}
	serveCodec(newCodec(name, conn), opt.HandleTimeout)
}

func serveCodec(cc Codec, timeout time.Duration) {
	sending := new(sync.Mutex)
	var wg sync.WaitGroup
	for {
		h := new(Header)
		if err := cc.ReadHeader(h); err != nil {
			if err != io.EOF && err != io.ErrUnexpectedEOF {
				log.Println("read header error:", err)
			}
			break
		}
		m, err := findMethod(h.ServiceMethod)
		if err != nil {
			// Unlike either Go version (the original leaves the body in
			// the stream, to be misread as the next header; the
			// article's dereferences a nil method and crashes), the body
			// is read and dropped, as net/rpc does, so that one
			// connection serves the cases after this one.
			if err := cc.ReadBody(nil); err != nil {
				log.Println("read body error:", err)
				break
			}
			send(cc, sending, h, err.Error(), invalidRequest)
			continue
		}
		args := m.newArgs()
		if err := cc.ReadBody(args); err != nil {
			log.Println("read argv err:", err)
			send(cc, sending, h, err.Error(), invalidRequest)
			break
		}
		wg.Add(1)
		go handle(cc, sending, &wg, h, m, args, timeout)
	}
	wg.Wait()
	_ = cc.Close()
}

// handle runs one call. With a handle timeout, the error reply goes out at
// the deadline and the handler's late reply is dropped (the original
// version's behaviour; PROTOCOL.md section 6).
func handle(cc Codec, sending *sync.Mutex, wg *sync.WaitGroup, h *Header, m method, args interface{}, timeout time.Duration) {
	defer wg.Done()
	var once sync.Once
	done := make(chan struct{})
	go func() {
		reply := m.newReply()
		err := m.call(args, reply)
		once.Do(func() {
			if err != nil {
				send(cc, sending, h, err.Error(), invalidRequest)
			} else {
				send(cc, sending, h, "", reply)
			}
		})
		close(done)
	}()
	if timeout == 0 {
		<-done
		return
	}
	select {
	case <-done:
	case <-time.After(timeout):
		once.Do(func() {
			send(cc, sending, h, fmt.Sprintf("rpc server: request handle timeout: expect within %s", timeout), invalidRequest)
		})
	}
}

func send(cc Codec, sending *sync.Mutex, h *Header, errText string, body interface{}) {
	sending.Lock()
	defer sending.Unlock()
	reply := *h
	reply.Error = errText
	if err := cc.Write(&reply, body); err != nil {
		log.Println("write response error:", err)
	}
}
