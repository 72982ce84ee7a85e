package main

import (
	"bufio"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// childProc is an orchard command running as a child process, its stderr
// collected.
type childProc struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	out    strings.Builder
	exited chan struct{} // closed once it has ended; err says how
	err    error
}

// startChild starts orchard with args and env. The test's cleanup kills it.
func startChild(t *testing.T, env []string, args ...string) *childProc {
	t.Helper()
	c := &childProc{cmd: exec.Command(os.Args[0], args...), exited: make(chan struct{})}
	c.cmd.Env = append(slices.Clip(env), "ORCHARD_TEST_RUN_MAIN=1")
	stderr, err := c.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			c.mu.Lock()
			c.out.WriteString(sc.Text() + "\n")
			c.mu.Unlock()
		}
		c.err = c.cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(c.stop)
	return c
}

// stop kills the child and waits (a little) for it to end.
func (c *childProc) stop() {
	_ = c.cmd.Process.Kill()
	select {
	case <-c.exited:
	case <-time.After(5 * time.Second):
	}
}

func (c *childProc) log() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.String()
}

func (c *childProc) logged(s string) bool { return strings.Contains(c.log(), s) }

// handedOut holds the ports freeAddr has given out.
var handedOut = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

// freeAddr is a loopback address nothing listened on just now, for a server
// that must know its address before it starts. The port lies below the
// kernel's ephemeral range, so an outgoing connection cannot take it before
// the server binds it (CI saw that happen with a port the kernel picked),
// and this process never gives it out twice.
func freeAddr(t *testing.T) string {
	t.Helper()
	handedOut.Lock()
	defer handedOut.Unlock()
	if start := ephemeralStart(); start > 20000 {
		for range 200 {
			port := 10000 + rand.IntN(start-10000)
			if handedOut.ports[port] {
				continue
			}
			addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
			if l, err := net.Listen("tcp", addr); err == nil {
				l.Close()
				handedOut.ports[port] = true
				return addr
			}
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// ephemeralStart is the first port of the kernel's ephemeral range, or 0
// when it cannot be read.
func ephemeralStart() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	fields := strings.Fields(string(b))
	if len(fields) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(fields[0])
	return n
}

// serveProc is `orchard serve` as a child process; srv talks to it.
type serveProc struct {
	*childProc
	t   *testing.T
	env []string
	srv *testServer
}

// startServe starts `orchard serve` with env, listening on a port freeAddr
// found free. waitUp tells when it answers.
func startServe(t *testing.T, env []string) *serveProc {
	t.Helper()
	s := &serveProc{t: t, env: env}
	s.start()
	return s
}

func (s *serveProc) start() { s.startOn(freeAddr(s.t)) }

// startOn starts the child listening on addr.
func (s *serveProc) startOn(addr string) {
	s.t.Helper()
	s.childProc = startChild(s.t, append(slices.Clip(s.env), "ORCHARD_LISTEN="+addr), "serve")
	s.srv = &testServer{t: s.t, URL: "http://" + addr, env: map[string]string{}}
}

// serveChild starts `orchard serve` with env and waits until it is healthy.
func serveChild(t *testing.T, env []string) *serveProc {
	t.Helper()
	s := startServe(t, env)
	s.waitUp("/healthz", 60*time.Second)
	return s
}

// waitUp polls path until it answers 200 and fails the test when the child
// ends first. The port freeAddr found can be taken before the child binds
// it (CI saw an outgoing connection's local port land on it while eight
// servers started on PostgreSQL); then the child starts again on another
// port, up to four times.
func (s *serveProc) waitUp(path string, within time.Duration) {
	s.t.Helper()
	for attempt := 1; !s.poll(path, within); attempt++ {
		if attempt == 5 || !s.logged("address already in use") {
			s.t.Fatalf("serve exited (%v) before it answered %s:\n%s", s.err, path, s.log())
		}
		s.t.Logf("serve found %s taken; starting it on another port", strings.TrimPrefix(s.srv.URL, "http://"))
		s.start()
	}
}

// pollClient gives up on a port that accepts but does not answer.
var pollClient = &http.Client{Timeout: 2 * time.Second}

// poll reports whether path answered 200 before the child ended; it fails
// the test when neither happens within the time given.
func (s *serveProc) poll(path string, within time.Duration) bool {
	s.t.Helper()
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		select {
		case <-s.exited:
			return false
		default:
		}
		if resp, err := pollClient.Get(s.srv.URL + path); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				select {
				case <-s.exited: // something else answered on the port
					return false
				default:
					return true
				}
			}
		}
	}
	s.t.Fatalf("serve did not answer %s within %v:\n%s", path, within, s.log())
	return false
}

// A child whose port was taken before it could bind starts again on another.
func TestServeChildMovesOffATakenPort(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	env := append(os.Environ(), "ORCHARD_DATA_DIR="+t.TempDir(), "ORCHARD_APPLE=simulator")
	s := &serveProc{t: t, env: env}
	s.startOn(taken.Addr().String())
	first := s.childProc
	s.waitUp("/readyz", 30*time.Second)
	if !first.logged("address already in use") || s.childProc == first || s.srv.URL == "http://"+taken.Addr().String() {
		t.Fatalf("serve answers at %s; want a second child on another port. First child's log:\n%s", s.srv.URL, first.log())
	}
}
