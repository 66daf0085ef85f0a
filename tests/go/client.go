package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// call is one pending request.
type call struct {
	reply interface{}
	err   error
	done  chan struct{}
}

// client is a GeeRPC client on one connection: requests go out under a
// lock, one goroutine reads replies and hands each to its pending call.
type client struct {
	cc      Codec
	sending sync.Mutex
	mu      sync.Mutex
	seq     uint64
	pending map[uint64]*call
	broken  error
}

func dial(cfg config) (*client, error) {
	at := strings.SplitN(cfg.addr, "@", 2)
	if len(at) != 2 {
		return nil, fmt.Errorf("address %q: expect tcp@HOST:PORT or http@HOST:PORT", cfg.addr)
	}
	conn, err := net.DialTimeout("tcp", at[1], cfg.connTimeout)
	if err != nil {
		return nil, err
	}
	if cfg.connTimeout > 0 {
		_ = conn.SetDeadline(time.Now().Add(cfg.connTimeout))
	}
	if at[0] == "http" {
		_, _ = io.WriteString(conn, fmt.Sprintf("CONNECT %s HTTP/1.0\n\n", cfg.path))
		resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: "CONNECT"})
		if err != nil {
			conn.Close()
			return nil, err
		}
		// Go clients compare the whole status text.
		if resp.Status != connectedStatus(cfg.path) {
			conn.Close()
			return nil, errors.New("unexpected HTTP response: " + resp.Status)
		}
	} else if at[0] != "tcp" {
		conn.Close()
		return nil, fmt.Errorf("address %q: expect tcp@ or http@", cfg.addr)
	}
	_ = conn.SetDeadline(time.Time{})
	opt := Option{
		MagicNumber:    cfg.magic,
		CodecType:      codecTypes[cfg.codecs[0]],
		ConnectTimeout: cfg.connTimeout,
		HandleTimeout:  cfg.handleTimeout,
	}
	// The Option exactly as Go GeeRPC writes it: json.Encoder, no padding.
	if err := json.NewEncoder(conn).Encode(&opt); err != nil {
		conn.Close()
		return nil, err
	}
	c := &client{cc: newCodec(cfg.codecs[0], conn), seq: 1, pending: map[uint64]*call{}}
	go c.receive()
	return c, nil
}

func (c *client) receive() {
	var err error
	for err == nil {
		var h Header
		if err = c.cc.ReadHeader(&h); err != nil {
			break
		}
		c.mu.Lock()
		cl := c.pending[h.Seq]
		delete(c.pending, h.Seq)
		c.mu.Unlock()
		switch {
		case cl == nil:
			// Unknown Seq: a reply after its call's timeout, or a drain
			// notice (Seq 0). Read and drop its body.
			err = c.cc.ReadBody(nil)
		case h.Error != "":
			cl.err = errors.New(h.Error)
			err = c.cc.ReadBody(nil)
			close(cl.done)
		default:
			err = c.cc.ReadBody(cl.reply)
			if err != nil {
				cl.err = errors.New("reading body " + err.Error())
			}
			close(cl.done)
		}
	}
	c.mu.Lock()
	c.broken = err
	for seq, cl := range c.pending {
		cl.err = err
		close(cl.done)
		delete(c.pending, seq)
	}
	c.mu.Unlock()
}

func (c *client) call(ctx context.Context, serviceMethod string, args, reply interface{}) error {
	cl := &call{reply: reply, done: make(chan struct{})}
	c.sending.Lock()
	c.mu.Lock()
	if c.broken != nil {
		c.mu.Unlock()
		c.sending.Unlock()
		return c.broken
	}
	seq := c.seq
	c.seq++
	c.pending[seq] = cl
	c.mu.Unlock()
	err := c.cc.Write(&Header{ServiceMethod: serviceMethod, Seq: seq}, args)
	c.sending.Unlock()
	if err != nil {
		c.mu.Lock()
		delete(c.pending, seq)
		c.mu.Unlock()
		return err
	}
	select {
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.pending, seq)
		c.mu.Unlock()
		return errors.New("rpc client: call failed: " + ctx.Err().Error())
	case <-cl.done:
		return cl.err
	}
}

// callSpec is one CALL argument.
type callSpec struct {
	Method    string          `json:"method"`
	Args      json.RawMessage `json:"args"`
	TimeoutMs int64           `json:"timeout_ms"`
}

type callResult struct {
	Method    string      `json:"method"`
	Reply     interface{} `json:"reply"`
	Error     string      `json:"error"`
	ElapsedMs int64       `json:"elapsed_ms"`
}

func runClient(cfg config, specs []string) int {
	out := json.NewEncoder(os.Stdout)
	c, err := dial(cfg)
	if err != nil {
		_ = out.Encode(map[string]string{"dial_error": err.Error()})
		return 1
	}
	for _, s := range specs {
		var spec callSpec
		if err := json.Unmarshal([]byte(s), &spec); err != nil {
			fatalf("bad CALL %q: %v", s, err)
		}
		args := argsFor(spec.Method)
		if len(spec.Args) > 0 {
			if err := json.Unmarshal(spec.Args, args); err != nil {
				fatalf("bad args in %q: %v", s, err)
			}
		}
		reply := replyFor(spec.Method)
		ctx, cancel := context.Background(), context.CancelFunc(func() {})
		if spec.TimeoutMs > 0 {
			ctx, cancel = context.WithTimeout(ctx, time.Duration(spec.TimeoutMs)*time.Millisecond)
		}
		start := time.Now()
		err := c.call(ctx, spec.Method, args, reply)
		cancel()
		r := callResult{Method: spec.Method, ElapsedMs: time.Since(start).Milliseconds()}
		if err != nil {
			r.Error = err.Error()
		} else {
			r.Reply = reply
		}
		_ = out.Encode(r)
	}
	return 0
}
