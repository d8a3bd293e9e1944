package audit

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func testMsg(i int) message {
	return message{id: fmt.Sprintf("id-%04d", i), typ: "gatehouse.auth.deny", key: "auth.deny",
		time: time.Unix(1700000000, int64(i)*1000).UTC(), body: []byte(fmt.Sprintf(`{"n":%d}`, i))}
}

func segFiles(t testing.TB, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*"+segmentSuffix))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func mustOpen(t testing.TB, dir string, maxBytes, seg int64) *spool {
	t.Helper()
	s, err := openSpool(dir, maxBytes, seg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// drain reads every record and returns them with their segments.
func drain(s *spool) ([]message, []*segment) {
	var ms []message
	var segs []*segment
	for {
		m, seg, ok := s.next()
		if !ok {
			return ms, segs
		}
		ms = append(ms, m)
		segs = append(segs, seg)
	}
}

func TestSpoolOrderAcrossSegmentsAndRestart(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, 1<<20, 200) // tiny segments: several files
	var in []message
	for i := range 50 {
		m := testMsg(i)
		if i%7 == 3 { // batches (record version 2) between single events
			m.batch, m.body = i, []byte(fmt.Sprintf(`[{"n":%d},{"n":0}]`, i))
		}
		in = append(in, m)
	}
	if n, err := s.append(in[:30]); n != 30 || err != nil {
		t.Fatalf("append = %d, %v", n, err)
	}
	if len(segFiles(t, dir)) < 3 {
		t.Fatalf("want several segments, got %v", segFiles(t, dir))
	}
	// Read part, confirm none, "crash" (close), write more in a new process.
	if part, _ := drain(s); len(part) != 30 {
		t.Fatalf("drained %d, want 30", len(part))
	}
	s.close()
	s = mustOpen(t, dir, 1<<20, 200)
	if n, err := s.append(in[30:]); n != 20 || err != nil {
		t.Fatalf("append = %d, %v", n, err)
	}
	got, segs := drain(s)
	if len(got) != 50 {
		t.Fatalf("replayed %d records, want 50", len(got))
	}
	for i, m := range got {
		w := in[i]
		if m.id != w.id || m.typ != w.typ || m.key != w.key || !m.time.Equal(w.time) || string(m.body) != string(w.body) || m.batch != w.batch {
			t.Fatalf("record %d = %+v, want %+v", i, m, w)
		}
	}
	for _, seg := range segs {
		s.ack(seg)
	}
	if files := segFiles(t, dir); len(files) != 0 || s.bytes() != 0 || !s.empty() {
		t.Errorf("after confirming everything: files %v, bytes %d, empty %v", files, s.bytes(), s.empty())
	}
	s.close()
}

func TestSpoolRemovesOnlyAfterConfirm(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, 1<<20, 1<<20)
	if _, err := s.append([]message{testMsg(1), testMsg(2), testMsg(3)}); err != nil {
		t.Fatal(err)
	}
	_, segs := drain(s)
	if len(segs) != 3 || !s.empty() {
		t.Fatalf("drained %d, empty %v", len(segs), s.empty())
	}
	s.ack(segs[0])
	s.ack(segs[1])
	if files := segFiles(t, dir); len(files) != 1 {
		t.Fatalf("segment removed with a record unconfirmed: %v", files)
	}
	// A crash now replays the whole segment, duplicates included.
	s.close()
	s2 := mustOpen(t, dir, 1<<20, 1<<20)
	got, segs := drain(s2)
	if len(got) != 3 {
		t.Fatalf("replay after crash gave %d records, want 3", len(got))
	}
	for _, seg := range segs {
		s2.ack(seg)
	}
	if files := segFiles(t, dir); len(files) != 0 {
		t.Errorf("segments left after all confirmed: %v", files)
	}
}

func TestSpoolBound(t *testing.T) {
	dir := t.TempDir()
	size := int64(recordSize(testMsg(1)))
	s := mustOpen(t, dir, 5*size, 2*size)
	var in []message
	for i := range 8 {
		in = append(in, testMsg(i))
	}
	n, err := s.append(in)
	if n != 5 || err != errSpoolFull {
		t.Fatalf("append into a 5-record spool = %d, %v; want 5, errSpoolFull", n, err)
	}
	if !s.full(int(size) - recordHeader) {
		t.Error("full() = false for a full spool")
	}
	if s.bytes() != 5*size {
		t.Errorf("bytes = %d, want %d", s.bytes(), 5*size)
	}
	// Confirming the first two (one whole segment) makes room for two more.
	for range 2 {
		_, seg, _ := s.next()
		s.ack(seg)
	}
	if n, err := s.append(in[5:]); n != 2 || err != errSpoolFull {
		t.Fatalf("append after freeing a segment = %d, %v; want 2, errSpoolFull", n, err)
	}
	got, _ := drain(s)
	var ids []string
	for _, m := range got {
		ids = append(ids, m.id)
	}
	if want := "[id-0002 id-0003 id-0004 id-0005 id-0006]"; fmt.Sprint(ids) != want {
		t.Errorf("order = %v, want %s", ids, want)
	}
}

func TestSpoolTornRecord(t *testing.T) {
	tests := []struct {
		name    string
		corrupt func(b []byte) []byte
		want    int // records of the first segment that survive
	}{
		{"truncated tail", func(b []byte) []byte { return b[:len(b)-3] }, 2},
		{"flipped byte in last record", func(b []byte) []byte { b[len(b)-2] ^= 0xff; return b }, 2},
		{"garbage length in second", func(b []byte) []byte {
			r := recordSize(testMsg(0))
			b[r], b[r+1], b[r+2], b[r+3] = 0xff, 0xff, 0xff, 0x7f
			return b
		}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s := mustOpen(t, dir, 1<<20, 1<<20)
			if _, err := s.append([]message{testMsg(0), testMsg(1), testMsg(2)}); err != nil {
				t.Fatal(err)
			}
			s.close()
			path := segFiles(t, dir)[0]
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, tt.corrupt(b), 0o640); err != nil {
				t.Fatal(err)
			}
			s = mustOpen(t, dir, 1<<20, 1<<20)
			if _, err := s.append([]message{testMsg(9)}); err != nil {
				t.Fatal(err)
			}
			got, segs := drain(s)
			var ids []string
			for _, m := range got {
				ids = append(ids, m.id)
			}
			want := []string{"id-0000", "id-0001", "id-0002"}[:tt.want]
			want = append(want, "id-0009")
			if fmt.Sprint(ids) != fmt.Sprint(want) {
				t.Errorf("replayed %v, want %v", ids, want)
			}
			if s.corrupt != 1 {
				t.Errorf("corrupt segments = %d, want 1", s.corrupt)
			}
			for _, seg := range segs {
				s.ack(seg)
			}
			if files := segFiles(t, dir); len(files) != 0 {
				t.Errorf("files left: %v", files)
			}
		})
	}
}

func TestSpoolDirNotWritable(t *testing.T) {
	if os.Geteuid() == 0 {
		// root writes anywhere; a file in the way of the directory still fails.
		f := filepath.Join(t.TempDir(), "file")
		if err := os.WriteFile(f, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := openSpool(filepath.Join(f, "spool"), 1<<20, 1<<20, slog.New(slog.DiscardHandler)); err == nil {
			t.Fatal("openSpool under a regular file succeeded")
		}
		return
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	if _, err := openSpool(dir, 1<<20, 1<<20, slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("openSpool on a read-only directory succeeded")
	}
}

// TestSpoolLock: during a reload the new emitter's spool waits until the
// old one releases the directory, then sees what the old one left.
func TestSpoolLock(t *testing.T) {
	dir := t.TempDir()
	old := mustOpen(t, dir, 1<<20, 1<<20)
	if !old.locked {
		t.Fatal("first spool not locked")
	}
	if _, err := old.append([]message{testMsg(1)}); err != nil {
		t.Fatal(err)
	}
	replacement := mustOpen(t, dir, 1<<20, 1<<20)
	if replacement.locked {
		t.Fatal("second spool on the same directory got the lock")
	}
	if ok, err := replacement.tryLock(); ok || err != nil {
		t.Fatalf("tryLock while held = %v, %v", ok, err)
	}
	old.close()
	if ok, err := replacement.tryLock(); !ok || err != nil {
		t.Fatalf("tryLock after release = %v, %v", ok, err)
	}
	got, _ := drain(replacement)
	if len(got) != 1 || got[0].id != "id-0001" {
		t.Errorf("replacement sees %v, want the old spool's record", got)
	}
	replacement.close()
}
