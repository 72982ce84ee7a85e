package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// child runs the real program (this test binary acting as orchard) in dir
// with only the ORCHARD_* variables given, as an operator's shell would.
func child(t *testing.T, dir string, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	exe, err := filepath.Abs(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	// None of these commands serves: one still running after a minute is a
	// failure, not something to wait for.
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Dir = dir
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ORCHARD_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(append(cmd.Env, "ORCHARD_TEST_RUN_MAIN=1"), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("orchard %s still ran after a minute; stderr:\n%s", strings.Join(args, " "), errb.String())
	case errors.As(err, &exit):
		code = exit.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// assertEmptyDir fails when the program left anything in dir.
func assertEmptyDir(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("%s was created in the working directory", e.Name())
	}
}

// helpInvocations is every way of asking for help: each command and each
// group of commands ("apikey"), with -h, --help and "orchard help …".
func helpInvocations() [][]string {
	var out [][]string
	seen := map[string]bool{}
	for _, c := range commands {
		words := strings.Fields(c.name)
		for n := 1; n <= len(words); n++ {
			name := strings.Join(words[:n], " ")
			if seen[name] {
				continue
			}
			seen[name] = true
			out = append(out,
				append(slices.Clone(words[:n]), "-h"),
				append(slices.Clone(words[:n]), "--help"),
				append([]string{"help"}, words[:n]...))
		}
	}
	return append(out, []string{"-h"}, []string{"--help"}, []string{"help"})
}

// Every command and group answers -h and --help on stdout with exit status
// 0, lists its flags with their defaults and variables, and creates no file:
// not the default ./data, not ORCHARD_DATA_DIR.
func TestHelpTouchesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	for _, args := range helpInvocations() {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			t.Parallel()
			cwd, other := t.TempDir(), t.TempDir()
			for _, env := range [][]string{nil, {"ORCHARD_DATA_DIR=" + filepath.Join(other, "data")}} {
				stdout, stderr, code := child(t, cwd, env, args...)
				if code != 0 || stderr != "" {
					t.Fatalf("exit %d, stderr %q", code, stderr)
				}
				assertEmptyDir(t, cwd)
				assertEmptyDir(t, other)
				words := slices.DeleteFunc(slices.Clone(args), func(a string) bool { return a == "help" || isHelpFlag(a) })
				if line, _, _ := strings.Cut(stdout, "\n"); !strings.HasPrefix(line+" ", strings.TrimSpace("usage: orchard "+strings.Join(words, " "))+" ") {
					t.Fatalf("help does not start with its usage line:\n%s", stdout)
				}
				cmd, rest := lookup(words)
				if cmd == nil || len(rest) > 0 {
					// A group lists its commands.
					for _, sub := range children(words) {
						if !strings.Contains(stdout, sub.name) {
							t.Errorf("%q is not listed:\n%s", sub.name, stdout)
						}
					}
					return
				}
				if cmd.config {
					for _, s := range settings {
						want := s.env
						if def := settingDefault(s, cmd.defaults); def != "" {
							want += "=" + def
						}
						if !strings.Contains(stdout, "--"+s.flag+" ") || !strings.Contains(stdout, want+"\n") || !strings.Contains(stdout, s.help) {
							t.Errorf("--%s, %s or its help is missing:\n%s", s.flag, want, stdout)
						}
					}
				}
				if cmd.setup != nil {
					fs := quietFlagSet(cmd.name)
					cmd.setup(fs)
					fs.VisitAll(func(f *flag.Flag) {
						if !strings.Contains(stdout, "--"+f.Name) {
							t.Errorf("flag --%s is missing:\n%s", f.Name, stdout)
						}
					})
					if cmd.name == "apikey create" && !strings.Contains(stdout, "--role ROLE (default admin)") {
						t.Errorf("the default role is not shown:\n%s", stdout)
					}
				}
			}
		})
	}
}

// --version, -version and version print the version and the commit.
func TestVersion(t *testing.T) {
	for _, arg := range []string{"--version", "-version", "version"} {
		stdout, stderr, code := child(t, t.TempDir(), nil, arg)
		if code != 0 || stderr != "" || !regexp.MustCompile(`^orchard \S+ commit \S+ go1\.\S+ \S+/\S+\n$`).MatchString(stdout) {
			t.Errorf("%s: exit %d, stdout %q, stderr %q", arg, code, stdout, stderr)
		}
	}
	// What make build stamps (-ldflags -X) wins over the toolchain's record.
	defer func(v, c string) { version, commit = v, c }(version, commit)
	version, commit = "v1.2.3", "0123abcd"
	var out bytes.Buffer
	if err := run(t.Context(), []string{"--version"}, func(string) string { return "" }, &out, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "orchard v1.2.3 commit 0123abcd go1.") {
		t.Errorf("stamped version: %q", out.String())
	}
}

// A command line Orchard cannot understand says so once, with a hint to the
// help, exits with status 2 and creates nothing. serve's stderr is its log,
// so there the error is one JSON line.
func TestUsageErrors(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	for _, tc := range []struct {
		args       []string
		err, hint  string
		serverLike bool
	}{
		{[]string{"apikey", "create", "--bogus"}, "flag provided but not defined: -bogus", `run "orchard apikey create -h"`, false},
		{[]string{"apikey", "create", "--data-dir", "x", "--bogus", "--name", "n"}, "flag provided but not defined: -bogus", `run "orchard apikey create -h"`, false},
		{[]string{"apikey", "create"}, "--name is required", `run "orchard apikey create -h"`, false},
		{[]string{"apikey", "create", "--name", "n", "--role", "root"}, `--role must be admin, technician or viewer, not "root"`, `run "orchard apikey create -h"`, false},
		{[]string{"apikey", "revoke"}, "apikey revoke takes ID", `run "orchard apikey revoke -h"`, false},
		{[]string{"apikey", "revoke", "seven"}, `"seven" is not a key ID`, `run "orchard apikey revoke -h"`, false},
		{[]string{"apikey", "frobnicate"}, `unknown apikey command "frobnicate": use create, list, revoke`, `run "orchard apikey -h"`, false},
		{[]string{"apikey"}, "apikey needs a command: create, list, revoke", `run "orchard apikey -h"`, false},
		{[]string{"token", "inspect"}, "token inspect takes FILE", `run "orchard token inspect -h"`, false},
		{[]string{"secrets", "rotate", "--drop-old=maybe"}, `invalid boolean value "maybe" for -drop-old`, `run "orchard secrets rotate -h"`, false},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`, `run "orchard -h"`, false},
		{[]string{"serve", "--bogus"}, "flag provided but not defined: -bogus", `run "orchard serve -h"`, true},
		{[]string{"serve", "extra"}, `unexpected argument "extra"`, `run "orchard serve -h"`, true},
		{[]string{"demo", "--listen"}, "flag needs an argument: -listen", `run "orchard demo -h"`, true},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			t.Parallel()
			cwd := t.TempDir()
			stdout, stderr, code := child(t, cwd, nil, tc.args...)
			if code != 2 || stdout != "" {
				t.Errorf("exit %d, stdout %q; want 2 and nothing", code, stdout)
			}
			assertEmptyDir(t, cwd)
			lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
			if tc.serverLike {
				// One line, so the error is said once.
				var entry struct{ Level, Err, Hint string }
				if len(lines) != 1 || json.Unmarshal([]byte(lines[0]), &entry) != nil || entry.Level != "ERROR" || !strings.Contains(entry.Err, tc.err) || !strings.HasPrefix(entry.Hint, tc.hint) {
					t.Errorf("want one JSON error line with a hint, got:\n%s", stderr)
				}
				return
			}
			if n := strings.Count(stderr, tc.err); n != 1 {
				t.Errorf("the error appears %d times in:\n%s", n, stderr)
			}
			if len(lines) != 2 || !strings.HasPrefix(lines[0], "orchard: "+tc.err) || !strings.HasPrefix(lines[1], tc.hint) {
				t.Errorf("want the error line then the hint, got:\n%s", stderr)
			}
		})
	}
}

// jsonLines fails unless every line of log is a JSON object, and returns them.
func jsonLines(t *testing.T, log string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range strings.Lines(log) {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("not a JSON line: %q\nin:\n%s", line, log)
		}
		out = append(out, m)
	}
	return out
}

// serve and demo that cannot start say why in a JSON line at error level on
// stderr, and write nothing that is not JSON.
func TestStartFailuresAreJSON(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busy.Close() }) // after the parallel subtests
	// Nothing listens there, and no port the kernel picks lands on it.
	closedAddr := freeAddr(t)
	for _, tc := range []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"unknown database scheme", []string{"serve"}, []string{"ORCHARD_DATABASE_URL=mysql://db/orchard"}, "ORCHARD_DATABASE_URL must start with sqlite:// or postgres://"},
		{"database that does not answer", []string{"serve"}, []string{"ORCHARD_DATABASE_URL=postgres://orchard@" + closedAddr + "/orchard?sslmode=disable&connect_timeout=5"}, "connect"},
		{"port in use", []string{"serve"}, []string{"ORCHARD_LISTEN=" + busy.Addr().String()}, "address already in use"},
		{"bad log level", []string{"serve"}, []string{"ORCHARD_LOG_LEVEL=loud"}, `ORCHARD_LOG_LEVEL="loud"`},
		{"bad setting, quiet log level", []string{"serve"}, []string{"ORCHARD_LOG_LEVEL=error", "ORCHARD_RATE_LIMIT=fast"}, `ORCHARD_RATE_LIMIT="fast"`},
		{"demo, port in use", []string{"demo", "--listen", busy.Addr().String()}, nil, "address already in use"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := append([]string{"ORCHARD_DATA_DIR=" + t.TempDir()}, tc.env...)
			_, stderr, code := child(t, t.TempDir(), env, tc.args...)
			if code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			lines := jsonLines(t, stderr)
			if len(lines) == 0 {
				t.Fatal("nothing logged")
			}
			last := lines[len(lines)-1]
			if last["level"] != "ERROR" || !strings.Contains(last["err"].(string), tc.want) || last["command"] != tc.args[0] {
				t.Errorf("last line %v; want an ERROR whose err says %q", last, tc.want)
			}
		})
	}
}
