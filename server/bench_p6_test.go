package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime/pprof"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// P6's subscribers run in a process of their own, the test binary run again
// with envBenchSubscribers set, so that the server's process and file
// descriptors hold only the server's side of the sockets. It opens that many
// graphql-transport-ws sockets to ORCHARD_TEST_BENCH_WS with the key in
// ORCHARD_TEST_BENCH_KEY, subscribes each to the expiry warnings and prints
// "ready"; then, for each socket's first warning, "lat" and the nanoseconds
// from the warning's issuedAt to its arrival; then "done". A failure prints
// "error" and a reason.
const envBenchSubscribers = "ORCHARD_TEST_BENCH_SUBSCRIBERS"

func runBenchSubscribers() error {
	n, err := strconv.Atoi(os.Getenv(envBenchSubscribers))
	if err != nil || n <= 0 {
		return fmt.Errorf("%s=%q: want a count", envBenchSubscribers, os.Getenv(envBenchSubscribers))
	}
	url, key := os.Getenv("ORCHARD_TEST_BENCH_WS"), os.Getenv("ORCHARD_TEST_BENCH_KEY")
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()

	init, _ := json.Marshal(wsMessage{Type: "connection_init", Payload: json.RawMessage(`{"Authorization":"Bearer ` + key + `"}`)})
	payload, _ := json.Marshal(map[string]any{"query": warningsSubscription, "variables": map[string]any{}})
	sub, _ := json.Marshal(wsMessage{ID: "1", Type: "subscribe", Payload: payload})

	// Opened 32 at a time, like a fleet connecting at a steady rate.
	conns := make([]*websocket.Conn, n)
	errs := make(chan error, n)
	slots := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for i := range conns {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			c, err := benchSubscriber(url, init, sub)
			if err != nil {
				errs <- fmt.Errorf("subscriber %d: %w", i, err)
				return
			}
			conns[i] = c
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	if path := os.Getenv(envBenchProfile); path != "" {
		if f, err := os.Create(path + ".fleet"); err == nil {
			_ = pprof.StartCPUProfile(f)
			defer func() { pprof.StopCPUProfile(); _ = f.Close() }()
		}
	}
	fmt.Fprintln(out, "ready")
	out.Flush()

	type arrival struct {
		lat time.Duration
		err error
	}
	got := make(chan arrival, n)
	for _, c := range conns {
		go func() {
			lat, err := firstWarning(c)
			got <- arrival{lat, err}
		}()
	}
	for range n {
		a := <-got
		if a.err != nil {
			return a.err
		}
		fmt.Fprintf(out, "lat %d\n", a.lat.Nanoseconds())
	}
	fmt.Fprintln(out, "done")
	return nil
}

// benchSubscriber dials, waits for the ack and sends the subscribe.
func benchSubscriber(url string, init, sub []byte) (*websocket.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{"graphql-transport-ws"}})
	if err != nil {
		return nil, err
	}
	if err := c.Write(ctx, websocket.MessageText, init); err != nil {
		return nil, err
	}
	for {
		_, b, err := c.Read(ctx)
		if err != nil {
			return nil, err
		}
		var m wsMessage
		if err := json.Unmarshal(b, &m); err != nil {
			return nil, err
		}
		if m.Type == "connection_ack" {
			break
		}
		if m.Type != "ping" && m.Type != "pong" {
			return nil, errors.New("got " + m.Type + " before connection_ack")
		}
	}
	return c, c.Write(ctx, websocket.MessageText, sub)
}

// firstWarning waits for c's first warning and says how long after its
// issuedAt it arrived, answering pings meanwhile.
//
// Reads take no deadline: under a context that can end, coder/websocket
// arms a context.AfterFunc for every read, work that would compete with
// the server for the two cores. The benchmark kills this process when it
// is done or gives up.
func firstWarning(c *websocket.Conn) (time.Duration, error) {
	ctx := context.Background()
	for {
		_, b, err := c.Read(ctx)
		arrived := time.Now()
		if err != nil {
			return 0, err
		}
		// The warning's own bytes first: ten thousand full decodes would
		// compete with the server for the two cores.
		if lat, ok := issuedBefore(b, arrived); ok {
			return lat, nil
		}
		var m wsMessage
		if err := json.Unmarshal(b, &m); err != nil {
			return 0, err
		}
		switch m.Type {
		case "ping":
			if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"pong"}`)); err != nil {
				return 0, err
			}
			continue
		case "pong":
			continue
		case "next":
		default:
			return 0, errors.New("got " + m.Type + ": " + string(m.Payload))
		}
		var w warningPayload
		if err := json.Unmarshal(m.Payload, &w); err != nil {
			return 0, err
		}
		issued, err := time.Parse(time.RFC3339Nano, w.Data.TokenExpiryWarnings.IssuedAt)
		if err != nil {
			return 0, fmt.Errorf("next without a warning: %s", m.Payload)
		}
		return arrived.Sub(issued), nil
	}
}

// issuedBefore reads the issuedAt of a next message without decoding it.
func issuedBefore(b []byte, arrived time.Time) (time.Duration, bool) {
	const key = `"issuedAt":"`
	i := bytes.Index(b, []byte(key))
	if i < 0 || !bytes.Contains(b, []byte(`"type":"next"`)) {
		return 0, false
	}
	rest := b[i+len(key):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return 0, false
	}
	issued, err := time.Parse(time.RFC3339Nano, string(rest[:j]))
	if err != nil {
		return 0, false
	}
	return arrived.Sub(issued), true
}
