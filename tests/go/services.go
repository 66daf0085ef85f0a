package main

import (
	"errors"
	"strings"
	"time"
)

// Args is the article's argument type.
type Args struct{ Num1, Num2 int }

// Inner and Rich give gob more than two ints to carry: strings, floats,
// bools, byte slices, slices, maps, a nested struct and a pointer.
type Inner struct {
	Name string
	Tags []string
}

type Rich struct {
	Text     string
	Count    int
	Negative int64
	Unsigned uint64
	Ratio    float64
	Ok       bool
	Data     []byte
	List     []int
	Dict     map[string]int
	Nested   Inner
	Ptr      *Inner
}

// method is one callable: fresh argument and reply values and the call.
type method struct {
	newArgs  func() interface{}
	newReply func() interface{}
	call     func(args, reply interface{}) error
}

// services mirrors tests/common's arith() (Sum, SleepMs, Fail) plus
// Types.Echo, so that a Go client's calls mean the same against either
// server.
var services = map[string]map[string]method{
	"Arith": {
		"Sum": {newArgs: newArgs, newReply: newInt, call: func(a, r interface{}) error {
			args := a.(*Args)
			*r.(*int) = args.Num1 + args.Num2
			return nil
		}},
		// Sleeps Num1 milliseconds, then answers the sum.
		"SleepMs": {newArgs: newArgs, newReply: newInt, call: func(a, r interface{}) error {
			args := a.(*Args)
			time.Sleep(time.Duration(args.Num1) * time.Millisecond)
			*r.(*int) = args.Num1 + args.Num2
			return nil
		}},
		"Fail": {newArgs: newArgs, newReply: newInt, call: func(a, r interface{}) error {
			return errors.New("boom: it failed")
		}},
	},
	"Types": {
		"Echo": {newArgs: newRich, newReply: newRich, call: func(a, r interface{}) error {
			*r.(*Rich) = *a.(*Rich)
			return nil
		}},
	},
}

func newArgs() interface{} { return new(Args) }
func newInt() interface{}  { return new(int) }
func newRich() interface{} { return new(Rich) }

// findMethod looks serviceMethod up, with Go GeeRPC's error texts.
func findMethod(serviceMethod string) (method, error) {
	dot := strings.LastIndex(serviceMethod, ".")
	if dot < 0 {
		return method{}, errors.New("rpc server: service/method request ill-formed: " + serviceMethod)
	}
	svc, ok := services[serviceMethod[:dot]]
	if !ok {
		return method{}, errors.New("rpc server: can't find service " + serviceMethod[:dot])
	}
	m, ok := svc[serviceMethod[dot+1:]]
	if !ok {
		return method{}, errors.New("rpc server: can't find method " + serviceMethod[dot+1:])
	}
	return m, nil
}

// replyFor is the value a client decodes serviceMethod's reply into.
func replyFor(serviceMethod string) interface{} {
	if m, err := findMethod(serviceMethod); err == nil {
		return m.newReply()
	}
	return newInt()
}

// argsFor is the value a client sends for serviceMethod.
func argsFor(serviceMethod string) interface{} {
	if m, err := findMethod(serviceMethod); err == nil {
		return m.newArgs()
	}
	return newArgs()
}
