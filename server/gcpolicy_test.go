package main

import (
	"errors"
	"testing"
)

func TestGCPolicy(t *testing.T) {
	files := func(m map[string]string) func(string) ([]byte, error) {
		return func(p string) ([]byte, error) {
			if s, ok := m[p]; ok {
				return []byte(s), nil
			}
			return nil, errors.New("no such file")
		}
	}
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	meminfo := "MemTotal:        8000000 kB\nMemFree:  1 kB\n"
	for _, c := range []struct {
		name    string
		env     map[string]string
		files   map[string]string
		percent int
		limit   int64
		ok      bool
	}{
		{"operator's GOGC wins", map[string]string{"GOGC": "100"}, map[string]string{"/proc/meminfo": meminfo}, 0, 0, false},
		{"operator's GOMEMLIMIT wins", map[string]string{"GOMEMLIMIT": "1GiB"}, map[string]string{"/proc/meminfo": meminfo}, 0, 0, false},
		{"cgroup v2 limit", nil, map[string]string{"/sys/fs/cgroup/memory.max": "1073741824\n", "/proc/meminfo": meminfo}, 400, 805306368, true},
		{"cgroup v2 without limit", nil, map[string]string{"/sys/fs/cgroup/memory.max": "max\n", "/proc/meminfo": meminfo}, 400, 8000000 << 10 / 2, true},
		{"cgroup v1 without limit", nil, map[string]string{"/sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n", "/proc/meminfo": meminfo}, 400, 8000000 << 10 / 2, true},
		{"cgroup v1 limit", nil, map[string]string{"/sys/fs/cgroup/memory/memory.limit_in_bytes": "536870912"}, 400, 402653184, true},
		{"nothing known", nil, nil, 0, 0, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, l, ok := gcPolicy(env(c.env), files(c.files))
			if p != c.percent || l != c.limit || ok != c.ok {
				t.Fatalf("gcPolicy = %d, %d, %v; want %d, %d, %v", p, l, ok, c.percent, c.limit, c.ok)
			}
		})
	}
}
