package audittest

import (
	"os"
	"strconv"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// TestStartNode: a node of the test's own takes connections, reports its
// VM's pid, and is gone after Stop.
func TestStartNode(t *testing.T) {
	n := StartNode(t)
	if pid := n.PID(); pid <= 0 {
		t.Errorf("PID() = %d", pid)
	} else if _, err := os.Stat("/proc/" + strconv.Itoa(pid) + "/stat"); err != nil {
		t.Errorf("node pid %d: %v", pid, err)
	}
	n.Stop()
	if conn, err := amqp.DialConfig(n.URL, amqp.Config{Dial: amqp.DefaultDial(2 * time.Second)}); err == nil {
		conn.Close()
		t.Error("the node still takes connections after Stop")
	}
}
