// ttrpc_peer is a containerd/ttrpc (Go) peer for cocoguest's interop tests and benchmark.
//
// Server mode serves the test service "cocoguest.test.Peer" on a unix socket:
//
//	Echo      returns the request payload unchanged
//	Metadata  returns the request metadata as JSON {"key": ["value", ...]}
//	Sleep     sleeps for the number of milliseconds in the payload (decimal text) or until the
//	          call's deadline, whichever comes first (deadline -> the context error's status)
//	Fail      returns the status "<code> <message>" given in the payload (decimal code, space, text)
//
// It also serves "attestation_agent.AttestationAgentService" GetTeeType, answering a fixed
// GetTeeTypeResponse{tee: "sample"} (bench/ttrpc.py compares it with cocoguest's attestation-agent).
//
// Client mode makes one unary call and prints one JSON line {"code", "message", "payload_hex"}.
//
// Payloads are raw bytes: the Raw type below marshals to and from its bytes unchanged, so no
// generated protobuf code is needed on either side.
package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Raw is a protobuf message whose wire form is its bytes (gogo Marshaler/Unmarshaler).
type Raw struct{ B []byte }

func (r *Raw) Reset()                   { r.B = nil }
func (r *Raw) String() string           { return hex.EncodeToString(r.B) }
func (r *Raw) ProtoMessage()            {}
func (r *Raw) Marshal() ([]byte, error) { return r.B, nil }
func (r *Raw) Unmarshal(b []byte) error { r.B = append([]byte(nil), b...); return nil }

const serviceName = "cocoguest.test.Peer"

func serve(addr string) error {
	s, err := ttrpc.NewServer()
	if err != nil {
		return err
	}
	s.Register(serviceName, map[string]ttrpc.Method{
		"Echo": func(ctx context.Context, unmarshal func(interface{}) error) (interface{}, error) {
			var req Raw
			if err := unmarshal(&req); err != nil {
				return nil, err
			}
			return &Raw{B: req.B}, nil
		},
		"Metadata": func(ctx context.Context, unmarshal func(interface{}) error) (interface{}, error) {
			var req Raw
			if err := unmarshal(&req); err != nil {
				return nil, err
			}
			md, _ := ttrpc.GetMetadata(ctx)
			out, err := json.Marshal(md)
			if err != nil {
				return nil, err
			}
			return &Raw{B: out}, nil
		},
		"Sleep": func(ctx context.Context, unmarshal func(interface{}) error) (interface{}, error) {
			var req Raw
			if err := unmarshal(&req); err != nil {
				return nil, err
			}
			ms, err := strconv.Atoi(string(req.B))
			if err != nil {
				return nil, status.Errorf(codes.InvalidArgument, "bad sleep %q", req.B)
			}
			select {
			case <-time.After(time.Duration(ms) * time.Millisecond):
				return &Raw{B: req.B}, nil
			case <-ctx.Done():
				return nil, status.FromContextError(ctx.Err()).Err()
			}
		},
		"Fail": func(ctx context.Context, unmarshal func(interface{}) error) (interface{}, error) {
			var req Raw
			if err := unmarshal(&req); err != nil {
				return nil, err
			}
			parts := strings.SplitN(string(req.B), " ", 2)
			code, err := strconv.Atoi(parts[0])
			if err != nil || len(parts) != 2 {
				return nil, status.Errorf(codes.InvalidArgument, "bad fail %q", req.B)
			}
			return nil, status.Error(codes.Code(code), parts[1])
		},
	})
	s.Register("attestation_agent.AttestationAgentService", map[string]ttrpc.Method{
		"GetTeeType": func(ctx context.Context, unmarshal func(interface{}) error) (interface{}, error) {
			var req Raw
			if err := unmarshal(&req); err != nil {
				return nil, err
			}
			// field 1 (tee), wire type 2, length 6, "sample"
			return &Raw{B: append([]byte{0x0a, 0x06}, []byte("sample")...)}, nil
		},
	})
	l, err := net.Listen("unix", addr)
	if err != nil {
		return err
	}
	// Tell the parent we are ready: it waits for this line before connecting.
	fmt.Println("ready")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		s.Close()
	}()
	err = s.Serve(ctx, l)
	if err == ttrpc.ErrServerClosed {
		return nil
	}
	return err
}

type result struct {
	Code       int    `json:"code"`
	Message    string `json:"message"`
	PayloadHex string `json:"payload_hex"`
}

type mdFlags []string

func (m *mdFlags) String() string     { return strings.Join(*m, ",") }
func (m *mdFlags) Set(v string) error { *m = append(*m, v); return nil }

func call(addr, service, method, payloadHex string, timeout time.Duration, md []string) error {
	conn, err := net.Dial("unix", addr)
	if err != nil {
		return err
	}
	client := ttrpc.NewClient(conn)
	defer client.Close()
	var payload []byte
	if payloadHex == "-" {
		payload, err = io.ReadAll(os.Stdin)
	} else {
		payload, err = hex.DecodeString(payloadHex)
	}
	if err != nil {
		return err
	}
	ctx := context.Background()
	if len(md) > 0 {
		meta := ttrpc.MD{}
		for _, kv := range md {
			parts := strings.SplitN(kv, "=", 2)
			meta.Append(parts[0], parts[1])
		}
		ctx = ttrpc.WithMetadata(ctx, meta)
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	var resp Raw
	err = client.Call(ctx, service, method, &Raw{B: payload}, &resp)
	st, _ := status.FromError(err)
	out, _ := json.Marshal(result{Code: int(st.Code()), Message: st.Message(), PayloadHex: hex.EncodeToString(resp.B)})
	fmt.Println(string(out))
	return nil
}

func main() {
	mode := flag.String("mode", "", "server or client")
	addr := flag.String("addr", "", "unix socket path")
	service := flag.String("service", serviceName, "client: service name")
	method := flag.String("method", "Echo", "client: method name")
	payloadHex := flag.String("payload-hex", "", "client: request payload, hex (- reads raw bytes from stdin)")
	timeout := flag.Duration("timeout", 0, "client: call deadline (0 = none)")
	var md mdFlags
	flag.Var(&md, "md", "client: metadata key=value (repeatable)")
	flag.Parse()
	var err error
	switch *mode {
	case "server":
		err = serve(*addr)
	case "client":
		err = call(*addr, *service, *method, *payloadHex, *timeout, md)
	default:
		err = fmt.Errorf("-mode must be server or client")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ttrpc_peer:", err)
		os.Exit(1)
	}
}
