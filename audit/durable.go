package audit

import (
	"errors"
	"fmt"
	"os"
	"time"
)

// Durable mode (audit.durable, SPEC.md 12) changes where the rabbitmq
// worker publishes from, not how: every event it takes from the queue is
// appended to the spool first (take, as the ordinary mode does while the
// broker is away), and publishing reads only the spool (pump never takes
// from the queue). A record is released, as in the ordinary mode's replay,
// once the broker confirmed it. So an event is in the spool file (the page
// cache: a kill -9 cannot lose it) from the worker's first look at it, and
// on disk after the next group commit (fsync at most every fsync_interval:
// a power cut loses at most that window).
//
// Emit is unchanged: it still only puts a pointer into the bounded queue.
// What a kill -9 loses is what the worker had not yet taken from the queue:
// it appends each batch as soon as it reads it and blocks only in an fsync
// (group commit, at most every fsync_interval) or in a publish the socket
// cannot take, so under load that is the events of about one fsync.
//
// Hooks in rabbitmq.go: newRabbit calls initDurable; take does not publish
// directly and acceptQueue/pump read the queue only to spool while
// durableSpool holds; run calls commit each turn and nextWake asks
// commitWake when the next group commit is due.
//
// When the spool cannot be used (a write failed, or a reload's old emitter
// still holds spool_dir), the worker falls back to the ordinary mode and
// says so in the log: the events still go out, without the guarantee.

// durableState is the rabbitmq worker's group-commit state.
type durableState struct {
	on       bool
	interval time.Duration // fsync at most this often
	lastSync time.Time     // of the last group commit, on the emitter's clock
	syncSeg  *segment      // write segment as of the last group commit
	syncSize int64         // its size then
	dirSeg   *segment      // the last segment whose directory entry was fsynced
	syncs    int           // group commits done
}

func initDurable(r *rabbit) error {
	cfg := r.e.cfg
	if !cfg.Durable {
		return nil
	}
	if r.spool == nil {
		return errors.New("audit: durable needs spool_dir")
	}
	r.durable = durableState{on: true, interval: cfg.FsyncInterval}
	if r.durable.interval <= 0 {
		r.durable.interval = DefaultFsyncInterval
	}
	return nil
}

// durableSpool reports whether events go through the spool before they are
// published: durable mode with a usable spool.
func (r *rabbit) durableSpool() bool { return r.durable.on && r.spoolOK() }

// dirty reports whether the write segment holds bytes not yet fsynced.
func (r *rabbit) dirty() bool {
	s := r.spool
	if s == nil || s.w == nil {
		// No write segment: a rotation fsynced the last one, or it was
		// removed once every record in it was confirmed.
		return false
	}
	return s.wseg != r.durable.syncSeg || s.wseg.size != r.durable.syncSize
}

// commit fsyncs the spool's write segment when it holds unsynced records
// and the last group commit is at least fsync_interval old (on the
// emitter's clock). The first record after a quiet spell is synced at once.
func (r *rabbit) commit(now time.Time) {
	d := &r.durable
	if !d.on || r.spoolBroken || r.spool == nil || !r.spool.locked || !r.dirty() {
		return
	}
	if !d.lastSync.IsZero() && now.Sub(d.lastSync) < d.interval {
		return
	}
	if err := r.spool.sync(d); err != nil {
		r.spoolBroken = true
		r.log.Error("audit spool fsync failed, durable mode off until restart", "err", err)
		return
	}
	d.lastSync = now
	d.syncs++
}

// commitWake brings at forward to the next group commit when one is due.
func (r *rabbit) commitWake(at time.Time) time.Time {
	d := &r.durable
	if !d.on || r.spoolBroken || !r.dirty() {
		return at
	}
	next := d.lastSync.Add(d.interval)
	if at.IsZero() || next.Before(at) {
		return next
	}
	return at
}

// sync fsyncs the write segment and, the first time for a segment, the
// directory: a new file's name is data too, and without it a power cut
// could leave the synced records in a file nobody can find.
func (s *spool) sync(d *durableState) error {
	if err := s.w.Sync(); err != nil {
		return fmt.Errorf("fsync audit spool: %w", err)
	}
	if d.dirSeg != s.wseg {
		dir, err := os.Open(s.dir)
		if err != nil {
			return fmt.Errorf("fsync audit spool directory: %w", err)
		}
		err = dir.Sync()
		dir.Close()
		if err != nil {
			return fmt.Errorf("fsync audit spool directory: %w", err)
		}
		d.dirSeg = s.wseg
	}
	d.syncSeg, d.syncSize = s.wseg, s.wseg.size
	return nil
}
