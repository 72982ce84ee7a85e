package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"

	"github.com/orchard-msp/orchard/modules"
)

// The command line is the commands table: dispatch, -h/--help, the command
// list, usage errors and their hints all come from it, so a new command is
// one entry and its help cannot drift from what it accepts.
//
// The standard flag package parses; see README, "Commands", for why not a
// CLI library.

// action is what a command does once its arguments are parsed.
type action func(ctx context.Context, c *call) error

// call is one parsed invocation.
type call struct {
	cfg            *Config  // nil unless the command takes the configuration
	args           []string // the positional arguments, as many as command.args names
	getenv         func(string) string
	stdout, stderr io.Writer
}

// command is one entry of the command line.
type command struct {
	name    string   // the words after "orchard": "apikey create"
	args    []string // positional arguments, named for the usage line
	summary string   // one line for the command list
	about   string   // more for -h (optional)
	// config: the command reads the shared configuration (settings), so it
	// accepts every setting's flag and lists them in its help. defaults
	// replaces some settings' defaults for this command (by variable).
	config   bool
	defaults map[string]string
	// server: the command is a long-running server whose stderr is its log,
	// so its errors (start-up failures, bad flags) are JSON lines there.
	server bool
	// Exactly one of run, setup and raw: setup declares the command's own
	// flags on fs and returns the action that reads them; raw takes the
	// arguments unparsed and must call loadConfig (which answers -h with
	// flag.ErrHelp) before it touches anything.
	run   action
	setup func(fs *flag.FlagSet) action
	raw   func(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error
}

// commands is every command orchard has, in the order its usage lists them.
var commands = []*command{
	{name: "serve", summary: "run the server until SIGINT or SIGTERM", config: true, server: true,
		about: "Logs are JSON lines on stderr, start-up failures included.",
		run:   func(ctx context.Context, c *call) error { return serve(ctx, c.cfg, c.stderr, nil) }},
	{name: "apikey create", summary: "create an API key and print it alone on stdout", config: true, setup: apikeyCreate},
	{name: "apikey list", summary: "list keys (never the keys themselves)", config: true, run: apikeyList},
	{name: "apikey revoke", args: []string{"ID"}, summary: "stop a key at once (ID: the ID column of apikey list)", config: true, run: apikeyRevoke},
	{name: "token inspect", args: []string{"FILE"}, summary: "print a .vpptoken's organisation and expiry as JSON, offline", config: true, run: tokenInspect},
	{name: "secrets rotate", summary: "re-seal every stored token under a new key, while servers run", config: true, setup: secretsRotate,
		about: "With the key file (the default) it puts a new key first in DATA_DIR/secret.key and keeps the old ones\nuntil --drop-old. With ORCHARD_SECRET_KEY, put the new key first in that variable on every instance, then run it."},
	{name: "migrate", summary: "apply the pending schema migrations, under the migration lock", config: true, run: migrateUp,
		about: "serve applies them itself unless ORCHARD_AUTO_MIGRATE=false; concurrent runs wait for each other."},
	{name: "migrate status", summary: "say where the database stands: its version and the pending files", config: true, run: migrateStatus,
		about: "Only reads: on SQLite it does not create a database to report on it."},
	{name: "demo", summary: "serve with the Apple simulator, sample token files and an admin key", config: true, server: true,
		defaults: map[string]string{"ORCHARD_DATA_DIR": "./demo-data", "ORCHARD_APPLE": "simulator"},
		about:    "Prints the admin key and a short guide on stdout, then serves (JSON logs on stderr) with the Apple\nsimulator, whatever ORCHARD_APPLE says.",
		setup:    demoCommand},
	{name: "modules", summary: "list the modules compiled in", run: listModules},
	{name: "version", summary: "print the version and the commit it was built from (also --version)", run: printVersion},
}

// run is the whole program, so tests can drive it. It writes every message
// itself (help and results on stdout, errors on stderr) and returns the
// error only to say how it ended: exitCode turns it into the exit status.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "-h", "-help", "--help":
			writeUsage(stdout)
			return nil
		case "help":
			if len(args) == 1 {
				writeUsage(stdout)
				return nil
			}
			return run(ctx, append(slices.Clone(args[1:]), "-h"), getenv, stdout, stderr)
		case "-version", "--version":
			args = []string{"version"}
		}
	}
	cmd, rest := lookup(args)
	if cmd == nil {
		return groupOrUnknown(args, stdout, stderr)
	}
	c := &call{getenv: getenv, stdout: stdout, stderr: stderr}
	err := cmd.execute(ctx, rest, c)
	if errors.Is(err, flag.ErrHelp) {
		cmd.writeHelp(stdout)
		return nil
	}
	if err != nil {
		report(cmd, c, err)
	}
	return err
}

// execute parses args and runs the command.
func (cmd *command) execute(ctx context.Context, args []string, c *call) error {
	if cmd.raw != nil {
		return cmd.raw(ctx, args, c.getenv, c.stdout, c.stderr)
	}
	fs := quietFlagSet(cmd.name)
	act := cmd.run
	if cmd.setup != nil {
		act = cmd.setup(fs)
	}
	var given map[string]string
	if cmd.config {
		given = bindSettings(fs)
	}
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if len(pos) != len(cmd.args) {
		if len(cmd.args) == 0 {
			if cmd.config {
				return usageErrorf("unexpected argument %q: %s takes none; give settings as ORCHARD_* variables or as flags", pos[0], cmd.name)
			}
			return usageErrorf("unexpected argument %q: %s takes none", pos[0], cmd.name)
		}
		return usageErrorf("%s takes %s (got %d arguments)", cmd.name, strings.Join(cmd.args, " "), len(pos))
	}
	c.args = pos
	if cmd.config {
		if c.cfg, err = resolveConfig(given, c.getenv, cmd.defaults); err != nil {
			return err
		}
	}
	return act(ctx, c)
}

// parseInterleaved parses flags placed before, between or after the
// positional arguments (`apikey revoke 3 --data-dir /srv/orchard`) and
// returns the positional ones. After "--" everything is positional.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
}

// lookup finds the command named by the leading words of args (the
// longest match) and returns it with the arguments that follow its name.
func lookup(args []string) (*command, []string) {
	var best *command
	var n int
	for _, c := range commands {
		w := strings.Fields(c.name)
		if len(w) > n && len(w) <= len(args) && slices.Equal(w, args[:len(w)]) {
			best, n = c, len(w)
		}
	}
	return best, args[n:]
}

// children lists the commands whose names start with the words of prefix.
func children(prefix []string) []*command {
	var out []*command
	for _, c := range commands {
		w := strings.Fields(c.name)
		if len(w) > len(prefix) && slices.Equal(w[:len(prefix)], prefix) {
			out = append(out, c)
		}
	}
	return out
}

// groupOrUnknown answers args that name no command: a group such as
// "apikey" (help with -h, else a usage error naming its commands) or
// nothing known.
func groupOrUnknown(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		writeUsage(stderr)
		fmt.Fprintln(stderr, "\norchard: no command given")
		return usageErrorf("no command given")
	}
	n := 0
	for n < len(args) && len(children(args[:n+1])) > 0 {
		n++
	}
	if n == 0 {
		err := usageErrorf("unknown command %q", args[0])
		reportText(stderr, "", err)
		return err
	}
	group, subs := args[:n], children(args[:n])
	if n < len(args) && isHelpFlag(args[n]) {
		writeCommandList(stdout, "usage: orchard "+strings.Join(group, " ")+" COMMAND [flags]", subs)
		return nil
	}
	var names []string
	for _, c := range subs {
		names = append(names, strings.Fields(c.name)[n])
	}
	var err error
	if n == len(args) {
		err = usageErrorf("%s needs a command: %s", strings.Join(group, " "), strings.Join(names, ", "))
	} else {
		err = usageErrorf("unknown %s command %q: use %s", strings.Join(group, " "), args[n], strings.Join(names, ", "))
	}
	reportText(stderr, strings.Join(group, " "), err)
	return err
}

func isHelpFlag(a string) bool { return a == "-h" || a == "-help" || a == "--help" }

// usageError is a command line Orchard could not understand: exit status
// 2 and a hint to the command's help.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usageErrorf(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

// exitCode is the exit status run's error asks for: 0, 1 when the command
// failed, 2 when it was not understood.
func exitCode(err error) int {
	var u usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &u):
		return 2
	default:
		return 1
	}
}

// report writes a command's error once. A server's stderr is its log, read
// by machines: the error is a JSON line through the configured logger
// (hint included for a usage error). The other commands are run by people
// and scripts that read text, so they print "orchard: ERROR" and the hint.
func report(cmd *command, c *call, err error) {
	if !cmd.server {
		reportText(c.stderr, cmd.name, err)
		return
	}
	level := c.getenv("ORCHARD_LOG_LEVEL")
	if c.cfg != nil {
		level = c.cfg.LogLevel
	}
	attrs := []any{"command", cmd.name, "err", err.Error()}
	if errors.As(err, new(usageError)) {
		attrs = append(attrs, "hint", hint(cmd.name))
	}
	newLogger(level, c.stderr).Error("orchard "+cmd.name+" failed", attrs...)
}

func reportText(w io.Writer, name string, err error) {
	fmt.Fprintln(w, "orchard:", err)
	if errors.As(err, new(usageError)) {
		fmt.Fprintln(w, hint(name))
	}
}

func hint(name string) string {
	if name == "" {
		return `run "orchard -h" for the commands`
	}
	return fmt.Sprintf("run %q for its usage and flags", "orchard "+name+" -h")
}

// writeUsage writes the list of every command.
func writeUsage(w io.Writer) {
	writeCommandList(w, "usage: orchard COMMAND [flags]", commands)
	fmt.Fprintln(w, "\nConfiguration comes from ORCHARD_* environment variables; a flag of the same meaning\noverrides each. \"orchard COMMAND -h\" lists a command's flags, defaults and variables.")
}

func writeCommandList(w io.Writer, title string, cmds []*command) {
	fmt.Fprintf(w, "%s\n\ncommands:\n", title)
	for _, c := range cmds {
		fmt.Fprintf(w, "  %-22s %s\n", strings.TrimSpace(c.name+" "+strings.Join(c.args, " ")), c.summary)
	}
}

// writeHelp writes a command's -h: its usage line, its own flags and, for
// commands that read the configuration, every setting.
func (cmd *command) writeHelp(w io.Writer) {
	fs := quietFlagSet(cmd.name)
	if cmd.setup != nil {
		cmd.setup(fs)
	}
	line := "usage: orchard " + cmd.name
	if cmd.config || cmd.setup != nil {
		line += " [flags]"
	}
	if len(cmd.args) > 0 {
		line += " " + strings.Join(cmd.args, " ")
	}
	fmt.Fprintf(w, "%s\n\n%s.\n", line, upperFirst(cmd.summary))
	if cmd.about != "" {
		fmt.Fprintf(w, "%s\n", cmd.about)
	}
	if subs := children(strings.Fields(cmd.name)); len(subs) > 0 {
		fmt.Fprintln(w, "\nsubcommands:")
		for _, c := range subs {
			fmt.Fprintf(w, "  %-22s %s\n", strings.TrimSpace(c.name+" "+strings.Join(c.args, " ")), c.summary)
		}
	}
	own := false
	fs.VisitAll(func(f *flag.Flag) {
		if !own {
			fmt.Fprintln(w, "\nflags:")
			own = true
		}
		value, usage := flag.UnquoteUsage(f)
		if value != "" {
			value = " " + value
		}
		def := ""
		if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "0s" && f.DefValue != "false" {
			def = " (default " + f.DefValue + ")"
		}
		fmt.Fprintf(w, "  --%s%s%s\n        %s\n", f.Name, value, def, usage)
	})
	if cmd.config {
		fmt.Fprintln(w)
		writeSettingsHelp(w, cmd.defaults)
	}
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

func listModules(_ context.Context, c *call) error {
	for _, id := range modules.IDs("") {
		fmt.Fprintln(c.stdout, id)
	}
	return nil
}

// version and commit are stamped by `make build` (-ldflags -X); a plain
// `go build` leaves them empty and versionInfo falls back to what the Go
// toolchain recorded in the binary.
var version, commit string

// versionInfo returns the version and the commit the binary was built from.
func versionInfo() (ver, rev string) {
	ver, rev = version, commit
	info, ok := debug.ReadBuildInfo()
	if ok && ver == "" && info.Main.Version != "" && info.Main.Version != "(devel)" {
		ver = info.Main.Version // go install …@vX.Y.Z
	}
	if ok && rev == "" {
		var modified bool
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		if rev != "" && modified {
			rev += "-dirty"
		}
	}
	if ver == "" {
		ver = "devel"
	}
	if rev == "" {
		rev = "unknown"
	}
	return ver, rev
}

func printVersion(_ context.Context, c *call) error {
	ver, rev := versionInfo()
	fmt.Fprintf(c.stdout, "orchard %s commit %s %s %s/%s\n", ver, rev, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}
