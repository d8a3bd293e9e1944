package audit

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The spool is a directory of append-only segment files, each a sequence of
// records:
//
//	length uint32 LE | crc32c(payload) uint32 LE | payload
//	payload: version 1 | time unix ns int64 LE | id, type, key (each u16 LE length + bytes) | body
//	batch:   version 2 | time | events uint32 LE | id, type, key | body (a JSON array)
//
// A process never appends to a segment it did not create: segments found at
// start are replayed and a new one is opened for writing. A torn or corrupt
// record (kill -9 mid-write, disk trouble) ends its segment's replay: the
// rest of that segment is skipped and logged. A segment is deleted only when
// it has been read to its end and every record handed out from it has been
// confirmed (ack), so a crash replays it again: at-least-once, and re-sent
// events keep their id.
//
// The spool is owned by one goroutine (the rabbitmq worker); it has no locks.
type spool struct {
	dir    string
	max    int64 // bound on the sum of segment sizes
	segMax int64 // a segment is closed once it reaches this size
	log    *slog.Logger

	segs    []*segment // oldest first
	total   int64      // bytes of all segments
	nextSeq uint64

	w    *os.File // write file of wseg
	wseg *segment
	wbuf []byte

	r     *os.File // read file of rseg
	rseg  *segment
	roff  int64  // next record's offset in rseg
	rbuf  []byte // bytes of rseg from rbOff
	rbOff int64

	corrupt int // segments whose replay ended at a bad record

	lock   *os.File // flock(2)ed lock file: one emitter per spool_dir
	locked bool     // false: another emitter (the one a reload replaces) still owns dir
}

type segment struct {
	seq         uint64
	path        string
	size        int64
	outstanding int  // records handed out by next and not acked yet
	readDone    bool // next went past its end
}

const (
	segmentSuffix  = ".spool"
	defaultSegment = 8 << 20
	recordHeader   = 8
	maxRecord      = 16 << 20
)

var (
	errSpoolFull = errors.New("audit spool is full")
	castagnoli   = crc32.MakeTable(crc32.Castagnoli)
)

// openSpool opens (creating) dir, checks that it is writable and takes its
// lock. When another emitter holds the lock (during a reload the old emitter
// finishes while the new one starts), the spool is returned unlocked and
// tryLock must succeed before it is used.
func openSpool(dir string, maxBytes, segMax int64, log *slog.Logger) (*spool, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("open audit spool: %w", err)
	}
	probe, err := os.CreateTemp(dir, ".probe-*")
	if err != nil {
		return nil, fmt.Errorf("open audit spool: directory not writable: %w", err)
	}
	probe.Close()
	os.Remove(probe.Name())
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open audit spool lock: %w", err)
	}
	s := &spool{dir: dir, max: maxBytes, segMax: segMax, log: log, nextSeq: 1, lock: lock}
	if _, err := s.tryLock(); err != nil {
		lock.Close()
		return nil, err
	}
	return s, nil
}

// tryLock takes the directory's lock without waiting and, once held, lists
// the segments a previous owner left for replay. The kernel drops the lock
// when its process dies, so kill -9 never leaves it stale.
func (s *spool) tryLock() (bool, error) {
	if s.locked {
		return true, nil
	}
	if err := syscall.Flock(int(s.lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return false, nil
		}
		return false, fmt.Errorf("lock audit spool: %w", err)
	}
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		syscall.Flock(int(s.lock.Fd()), syscall.LOCK_UN)
		return false, fmt.Errorf("open audit spool: %w", err)
	}
	for _, de := range entries {
		name := de.Name()
		if !de.Type().IsRegular() || !strings.HasSuffix(name, segmentSuffix) {
			continue
		}
		seq, err := strconv.ParseUint(strings.TrimSuffix(name, segmentSuffix), 10, 64)
		if err != nil {
			continue
		}
		info, err := de.Info()
		if err != nil {
			continue // removed meanwhile
		}
		s.segs = append(s.segs, &segment{seq: seq, path: filepath.Join(s.dir, name), size: info.Size()})
		s.total += info.Size()
		s.nextSeq = max(s.nextSeq, seq+1)
	}
	slices.SortFunc(s.segs, func(a, b *segment) int { return cmpUint(a.seq, b.seq) })
	s.locked = true
	return true, nil
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// empty reports whether every spooled record has been handed out by next.
func (s *spool) empty() bool {
	for _, seg := range s.segs {
		if seg.readDone {
			continue
		}
		if seg != s.rseg || s.roff < seg.size {
			return false
		}
	}
	return true
}

// full reports whether a record of n bytes would not fit.
func (s *spool) full(n int) bool { return s.total+int64(n+recordHeader) > s.max }

// bytes is the spool's size on disk.
func (s *spool) bytes() int64 { return s.total }

// append writes msgs in order and returns how many were written: all of
// them, or fewer with errSpoolFull or a write error.
func (s *spool) append(msgs []message) (int, error) {
	done := 0
	for done < len(msgs) {
		if s.w == nil || s.wseg.size >= s.segMax {
			if err := s.rotate(); err != nil {
				return done, err
			}
		}
		// Encode as many records as fit in this segment and the bound.
		s.wbuf = s.wbuf[:0]
		n := 0
		var err error
		for _, m := range msgs[done:] {
			size := recordSize(m)
			if s.total+int64(len(s.wbuf)+size) > s.max {
				err = errSpoolFull
				break
			}
			if n > 0 && s.wseg.size+int64(len(s.wbuf)+size) > s.segMax {
				break
			}
			s.wbuf = appendRecord(s.wbuf, m)
			n++
		}
		if n > 0 {
			wrote, werr := s.w.Write(s.wbuf)
			s.wseg.size += int64(wrote)
			s.total += int64(wrote)
			if werr != nil {
				// A partial record is now the segment's tail: close it so
				// that replay sees a finished segment and skips the tail.
				s.closeWriter()
				return done, fmt.Errorf("write audit spool: %w", werr)
			}
			done += n
		}
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

func (s *spool) rotate() error {
	s.closeWriter()
	seg := &segment{seq: s.nextSeq, path: filepath.Join(s.dir, fmt.Sprintf("%020d%s", s.nextSeq, segmentSuffix))}
	f, err := os.OpenFile(seg.path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("create audit spool segment: %w", err)
	}
	s.nextSeq++
	s.w, s.wseg = f, seg
	s.segs = append(s.segs, seg)
	return nil
}

func (s *spool) closeWriter() {
	if s.w == nil {
		return
	}
	// A finished segment is flushed to disk once (kill -9 needs no fsync,
	// the page cache survives it; a power cut does not).
	s.w.Sync()
	s.w.Close()
	seg := s.wseg
	s.w, s.wseg = nil, nil
	s.maybeRemove(seg)
}

func recordSize(m message) int {
	n := recordHeader + 1 + 8 + 6 + len(m.id) + len(m.typ) + len(m.key) + len(m.body)
	if m.batch > 0 {
		n += 4
	}
	return n
}

func appendRecord(b []byte, m message) []byte {
	start := len(b)
	b = append(b, make([]byte, recordHeader)...)
	if m.batch > 0 {
		b = append(b, 2)
		b = binary.LittleEndian.AppendUint64(b, uint64(m.time.UnixNano()))
		b = binary.LittleEndian.AppendUint32(b, uint32(m.batch))
	} else {
		b = append(b, 1)
		b = binary.LittleEndian.AppendUint64(b, uint64(m.time.UnixNano()))
	}
	for _, s := range []string{m.id, m.typ, m.key} {
		b = binary.LittleEndian.AppendUint16(b, uint16(len(s)))
		b = append(b, s...)
	}
	b = append(b, m.body...)
	payload := b[start+recordHeader:]
	binary.LittleEndian.PutUint32(b[start:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(b[start+4:], crc32.Checksum(payload, castagnoli))
	return b
}

var errBadRecord = errors.New("torn or corrupt record")

func parseRecord(p []byte) (message, error) {
	if len(p) < 1+8+6 || (p[0] != 1 && p[0] != 2) {
		return message{}, errBadRecord
	}
	m := message{time: time.Unix(0, int64(binary.LittleEndian.Uint64(p[1:]))).UTC()}
	if p[0] == 2 {
		if len(p) < 1+8+4+6 {
			return message{}, errBadRecord
		}
		m.batch = int(binary.LittleEndian.Uint32(p[9:]))
		if m.batch == 0 {
			return message{}, errBadRecord
		}
		p = p[4:]
	}
	p = p[9:]
	var fields [3]string
	for i := range fields {
		if len(p) < 2 {
			return message{}, errBadRecord
		}
		n := int(binary.LittleEndian.Uint16(p))
		if len(p) < 2+n {
			return message{}, errBadRecord
		}
		fields[i] = string(p[2 : 2+n])
		p = p[2+n:]
	}
	m.id, m.typ, m.key = fields[0], fields[1], fields[2]
	m.body = slices.Clone(p)
	return m, nil
}

// next hands out the oldest record not handed out yet, with its segment for
// ack. ok is false when the reader has caught up with the writer.
func (s *spool) next() (m message, seg *segment, ok bool) {
	for {
		if s.rseg == nil {
			i := slices.IndexFunc(s.segs, func(g *segment) bool { return !g.readDone })
			if i < 0 {
				return message{}, nil, false
			}
			f, err := os.Open(s.segs[i].path)
			if err != nil {
				s.log.Error("audit spool segment unreadable, skipped", "segment", s.segs[i].path, "err", err)
				s.finishRead(s.segs[i])
				continue
			}
			s.r, s.rseg, s.roff, s.rbuf, s.rbOff = f, s.segs[i], 0, s.rbuf[:0], 0
		}
		seg := s.rseg
		if s.roff >= seg.size {
			if seg == s.wseg {
				return message{}, nil, false
			}
			s.finishRead(seg)
			continue
		}
		hdr, err := s.read(recordHeader)
		var n int
		if err == nil {
			n = int(binary.LittleEndian.Uint32(hdr))
			if n > maxRecord || s.roff+recordHeader+int64(n) > seg.size {
				err = errBadRecord
			}
		}
		var p []byte
		if err == nil {
			sum := binary.LittleEndian.Uint32(hdr[4:])
			p, err = s.read(recordHeader + n)
			if err == nil {
				p = p[recordHeader:]
				if crc32.Checksum(p, castagnoli) != sum {
					err = errBadRecord
				}
			}
		}
		if err == nil {
			m, err = parseRecord(p)
		}
		if err != nil {
			s.corrupt++
			s.log.Warn("audit spool: torn or corrupt record, rest of segment skipped",
				"segment", seg.path, "offset", s.roff, "err", err)
			s.roff = seg.size
			continue
		}
		s.roff += int64(recordHeader + n)
		seg.outstanding++
		return m, seg, true
	}
}

// read returns the n bytes of rseg at roff, refilling the read buffer.
func (s *spool) read(n int) ([]byte, error) {
	lo := s.roff - s.rbOff
	if lo >= 0 && lo+int64(n) <= int64(len(s.rbuf)) {
		return s.rbuf[lo : lo+int64(n)], nil
	}
	want := max(n, 256<<10)
	if left := s.rseg.size - s.roff; int64(want) > left {
		want = int(left)
	}
	if cap(s.rbuf) < want {
		s.rbuf = make([]byte, want)
	}
	s.rbuf = s.rbuf[:want]
	got, err := s.r.ReadAt(s.rbuf, s.roff)
	s.rbuf, s.rbOff = s.rbuf[:got], s.roff
	if got < n {
		if err == nil || err == io.EOF {
			err = errBadRecord
		}
		return nil, err
	}
	return s.rbuf[:n], nil
}

func (s *spool) finishRead(seg *segment) {
	seg.readDone = true
	if seg == s.rseg {
		if s.r != nil {
			s.r.Close()
		}
		s.r, s.rseg = nil, nil
	}
	s.maybeRemove(seg)
}

// ack records that one record handed out from seg was confirmed.
func (s *spool) ack(seg *segment) {
	seg.outstanding--
	s.maybeRemove(seg)
}

// maybeRemove deletes seg once it was read to its end and all its records
// were confirmed. The write segment goes too when the reader has caught up
// with it, so that an idle spool holds no files.
func (s *spool) maybeRemove(seg *segment) {
	if seg.outstanding > 0 {
		return
	}
	if seg == s.wseg {
		if s.rseg != seg || s.roff < seg.size {
			return
		}
		s.w.Close()
		s.w, s.wseg = nil, nil
		s.finishRead(seg) // calls maybeRemove again, now as a finished segment
		return
	}
	if !seg.readDone {
		if s.rseg != seg || s.roff < seg.size {
			return
		}
		seg.readDone = true
		s.r.Close()
		s.r, s.rseg = nil, nil
	}
	i := slices.Index(s.segs, seg)
	if i < 0 {
		return
	}
	if err := os.Remove(seg.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Error("remove audit spool segment", "segment", seg.path, "err", err)
	}
	s.segs = slices.Delete(s.segs, i, i+1)
	s.total -= seg.size
}

// close closes the files and releases the lock; what is on disk stays for
// the next owner.
func (s *spool) close() {
	defer func() {
		if s.lock != nil {
			s.lock.Close() // releases the flock
			s.lock, s.locked = nil, false
		}
	}()
	if s.w != nil {
		s.w.Sync()
		s.w.Close()
		s.w, s.wseg = nil, nil
	}
	if s.r != nil {
		s.r.Close()
		s.r, s.rseg = nil, nil
	}
}
