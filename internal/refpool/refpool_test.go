package refpool

import (
	"errors"
	"sync"
	"testing"
)

func TestAcquireRelease(t *testing.T) {
	var closed []string
	p := New[string, string](func(v string) { closed = append(closed, v) })
	builds := 0
	build := func() (string, error) { builds++; return "v1", nil }

	v, existed, err := p.Acquire("a", build)
	if err != nil || v != "v1" || existed {
		t.Fatalf("first Acquire = %q, %v, %v; want v1, false, nil", v, existed, err)
	}
	if _, existed, _ = p.Acquire("a", build); !existed {
		t.Fatal("second Acquire of a: existed = false, want true")
	}
	if builds != 1 {
		t.Fatalf("builds = %d, want 1", builds)
	}
	p.Release("a")
	if len(closed) != 0 {
		t.Fatalf("closed after first of two releases: %v", closed)
	}
	p.Release("a")
	if len(closed) != 1 || closed[0] != "v1" {
		t.Fatalf("closed = %v, want [v1]", closed)
	}
	if p.Len() != 0 {
		t.Fatalf("Len = %d after last release, want 0", p.Len())
	}
}

func TestBuildErrorLeavesPoolUnchanged(t *testing.T) {
	p := New[int, int](nil)
	boom := errors.New("boom")
	if _, _, err := p.Acquire(1, func() (int, error) { return 0, boom }); !errors.Is(err, boom) {
		t.Fatalf("Acquire err = %v, want boom", err)
	}
	if p.Len() != 0 {
		t.Fatalf("Len = %d after a failed build, want 0", p.Len())
	}
}

func TestDoubleReleasePanics(t *testing.T) {
	p := New[int, int](nil)
	_, _, _ = p.Acquire(1, func() (int, error) { return 1, nil })
	p.Release(1)
	defer func() {
		if recover() == nil {
			t.Fatal("second Release did not panic")
		}
	}()
	p.Release(1)
}

func TestConcurrentAcquireBuildsOnce(t *testing.T) {
	p := New[int, *int](nil)
	var mu sync.Mutex
	builds := 0
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, _ = p.Acquire(7, func() (*int, error) {
				mu.Lock()
				builds++
				mu.Unlock()
				return new(int), nil
			})
		}()
	}
	wg.Wait()
	if builds != 1 {
		t.Fatalf("builds = %d under concurrent Acquire, want 1", builds)
	}
}
