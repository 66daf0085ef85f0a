package main

import (
	"bufio"
	"encoding/gob"
	"encoding/json"
	"io"
	"time"
)

// Header is every message's first value. Its name and fields are those of
// Go GeeRPC's codec.Header, so that the gob type definitions on the wire
// are byte for byte what a Go GeeRPC peer sends.
type Header struct {
	ServiceMethod string
	Seq           uint64
	Error         string
}

// Codec reads and writes header+body pairs on one connection.
type Codec interface {
	ReadHeader(*Header) error
	// ReadBody decodes the next body into v; nil discards it.
	ReadBody(v interface{}) error
	Write(*Header, interface{}) error
	Close() error
}

// newCodec makes the codec for name on conn. Like Go GeeRPC it reads conn
// directly with a fresh decoder: bytes that an earlier reader (the
// Option's json.Decoder) buffered past its value are lost.
func newCodec(name string, conn io.ReadWriteCloser) Codec {
	buf := bufio.NewWriter(conn)
	if name == "json" {
		return &jsonCodec{conn: conn, buf: buf, dec: json.NewDecoder(conn), enc: json.NewEncoder(buf)}
	}
	return &gobCodec{conn: conn, buf: buf, dec: gob.NewDecoder(conn), enc: gob.NewEncoder(buf)}
}

type gobCodec struct {
	conn io.ReadWriteCloser
	buf  *bufio.Writer
	dec  *gob.Decoder
	enc  *gob.Encoder
}

func (c *gobCodec) ReadHeader(h *Header) error   { return c.dec.Decode(h) }
func (c *gobCodec) ReadBody(v interface{}) error { return c.dec.Decode(v) }
func (c *gobCodec) Close() error                 { return c.conn.Close() }

func (c *gobCodec) Write(h *Header, body interface{}) error {
	if err := c.enc.Encode(h); err != nil {
		return err
	}
	if err := c.enc.Encode(body); err != nil {
		return err
	}
	return c.buf.Flush()
}

type jsonCodec struct {
	conn io.ReadWriteCloser
	buf  *bufio.Writer
	dec  *json.Decoder
	enc  *json.Encoder
}

func (c *jsonCodec) ReadHeader(h *Header) error { return c.dec.Decode(h) }
func (c *jsonCodec) Close() error               { return c.conn.Close() }

func (c *jsonCodec) ReadBody(v interface{}) error {
	if v == nil {
		var skip json.RawMessage
		return c.dec.Decode(&skip)
	}
	return c.dec.Decode(v)
}

func (c *jsonCodec) Write(h *Header, body interface{}) error {
	if err := c.enc.Encode(h); err != nil {
		return err
	}
	if err := c.enc.Encode(body); err != nil {
		return err
	}
	return c.buf.Flush()
}

// Option is the handshake's JSON object, field for field as Go GeeRPC
// declares it (durations in nanoseconds).
type Option struct {
	MagicNumber    int
	CodecType      string
	ConnectTimeout time.Duration
	HandleTimeout  time.Duration
}
