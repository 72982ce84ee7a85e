package domain

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
)

func TestFanoutRendersOncePerShape(t *testing.T) {
	var f Fanout
	var renders atomic.Int32
	var wg sync.WaitGroup
	got := make([]string, 200)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			shape := fmt.Sprint("shape-", i%2)
			b, ok := f.Render(shape, func() ([]byte, bool) {
				renders.Add(1)
				return []byte("rendered for " + shape), true
			})
			if !ok {
				t.Errorf("subscriber %d: not shared", i)
			}
			got[i] = string(b)
		}()
	}
	wg.Wait()
	if n := renders.Load(); n != 2 {
		t.Fatalf("rendered %d times for two shapes", n)
	}
	for i, b := range got {
		if want := fmt.Sprint("rendered for shape-", i%2); b != want {
			t.Fatalf("subscriber %d got %q, want %q", i, b, want)
		}
	}
}

func TestFanoutUnsharedRendering(t *testing.T) {
	var f Fanout
	// A rendering that met an error of its own is not handed on.
	if _, ok := f.Render("s", func() ([]byte, bool) { return []byte("with an error"), false }); ok {
		t.Fatal("the first caller's unshareable bytes were reported shareable")
	}
	if _, ok := f.Render("s", func() ([]byte, bool) { t.Fatal("rendered again"); return nil, true }); ok {
		t.Fatal("a follower was handed bytes the first caller would not share")
	}
	// A panicking rendering releases the followers, who render themselves.
	func() {
		defer func() { _ = recover() }()
		f.Render("p", func() ([]byte, bool) { panic("boom") })
	}()
	if b, ok := f.Render("p", func() ([]byte, bool) { return []byte("x"), true }); ok || b != nil {
		t.Fatalf("after a panic: %q, %v", b, ok)
	}
}
