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
// a power cut loses at most that window plus the running fsync).
//
// Emit is unchanged: it still only puts a pointer into the bounded queue.
// What a kill -9 loses is what the worker had not yet taken from the queue:
// it appends each batch as soon as it reads it. The fsync runs in its own
// goroutine (syncer), one at a time, so the worker never waits for the
// disk; it blocks only in a publish the socket cannot take.
//
// Hooks in rabbitmq.go: newRabbit calls initDurable; take does not publish
// directly and acceptQueue/pump read the queue only to spool while
// durableSpool holds; run calls commit each turn, hands what arrives on
// durable.done to synced, and nextWake asks commitWake when the next group
// commit is due.
//
// When the spool cannot be used (a write failed, or a reload's old emitter
// still holds spool_dir), the worker falls back to the ordinary mode and
// says so in the log: the events still go out, without the guarantee.

// durableState is the rabbitmq worker's group-commit state.
type durableState struct {
	on       bool
	interval time.Duration // fsync at most this often
	lastSync time.Time     // start of the last group commit, on the emitter's clock
	syncSeg  *segment      // write segment as of the last group commit
	syncSize int64         // its size then
	dirSeg   *segment      // the last segment whose directory entry was fsynced
	syncs    int           // group commits done
	syncing  bool          // one is with the syncer

	req  chan syncJob // to the syncer
	done chan error   // its answer; nil without durable mode (never ready)
}

// syncJob is one group commit: the write segment's file and, for a new
// segment, the directory that names it.
type syncJob struct {
	f   *os.File
	dir string // "" when the directory entry was synced already
}

func (j syncJob) run() error {
	if err := j.f.Sync(); err != nil {
		if errors.Is(err, os.ErrClosed) {
			// The worker closed the segment meanwhile: a rotation fsynced
			// it, or every record in it was confirmed and it is gone.
			return nil
		}
		return fmt.Errorf("fsync audit spool: %w", err)
	}
	if j.dir == "" {
		return nil
	}
	d, err := os.Open(j.dir)
	if err != nil {
		return fmt.Errorf("fsync audit spool directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync audit spool directory: %w", err)
	}
	return nil
}

// syncer runs group commits for the worker until the worker ends (r.ctx).
// Sync and Close of one *os.File are safe together: the close waits for
// the fsync (the runtime counts the file's users).
func (r *rabbit) syncer() {
	defer r.wg.Done()
	for {
		select {
		case j := <-r.durable.req:
			r.durable.done <- j.run()
		case <-r.ctx.Done():
			return
		}
	}
}

// initDurable sets durable mode up and starts its syncer; newRabbit calls
// it once r.ctx exists.
func initDurable(r *rabbit) error {
	cfg := r.e.cfg
	if !cfg.Durable {
		return nil
	}
	if r.spool == nil {
		return errors.New("audit: durable needs spool_dir")
	}
	r.durable = durableState{on: true, interval: cfg.FsyncInterval, req: make(chan syncJob, 1), done: make(chan error, 1)}
	if r.durable.interval <= 0 {
		r.durable.interval = DefaultFsyncInterval
	}
	if r.ctx != nil {
		r.wg.Add(1)
		go r.syncer()
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

// commit starts a group commit when the spool's write segment holds
// unsynced records, no fsync is running, and the last one started at least
// fsync_interval ago (on the emitter's clock). The first record after a
// quiet spell is synced at once.
func (r *rabbit) commit(now time.Time) {
	d := &r.durable
	if !d.on || d.syncing || r.spoolBroken || r.spool == nil || !r.spool.locked || !r.dirty() {
		return
	}
	if !d.lastSync.IsZero() && now.Sub(d.lastSync) < d.interval {
		return
	}
	s := r.spool
	j := syncJob{f: s.w}
	if d.dirSeg != s.wseg {
		j.dir, d.dirSeg = s.dir, s.wseg
	}
	d.syncSeg, d.syncSize = s.wseg, s.wseg.size
	d.lastSync, d.syncing = now, true
	d.req <- j // room: one job at a time
}

// synced takes the syncer's answer. A failed fsync may have lost written
// records (Linux forgets the dirty pages): the spool is not trusted again.
func (r *rabbit) synced(err error) {
	r.durable.syncing = false
	if err != nil {
		r.spoolBroken = true
		r.log.Error("audit spool fsync failed, spooling stopped", "err", err)
		return
	}
	r.durable.syncs++
}

// commitWake brings at forward to the next group commit when one is due.
func (r *rabbit) commitWake(at time.Time) time.Time {
	d := &r.durable
	if !d.on || d.syncing || r.spoolBroken || !r.dirty() {
		return at // a running fsync wakes the worker when it ends
	}
	next := d.lastSync.Add(d.interval)
	if at.IsZero() || next.Before(at) {
		return next
	}
	return at
}
