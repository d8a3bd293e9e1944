// Package audittest holds what tests of the audit trail share: the real
// RabbitMQ they run against, found the same way in every package.
package audittest

import (
	"os"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// DefaultURL is the broker tests use when GATEHOUSE_TEST_AMQP_URL is unset.
const DefaultURL = "amqp://guest:guest@127.0.0.1:5672/"

// BrokerURL returns the test broker's URL (GATEHOUSE_TEST_AMQP_URL, else
// DefaultURL) after checking it answers. When it does not, the test is
// skipped with the reason, or fails when GATEHOUSE_REQUIRE_RABBITMQ=1 (CI
// sets it, so a broker that is down is a red build, not a quiet skip).
func BrokerURL(t testing.TB) string {
	t.Helper()
	url := os.Getenv("GATEHOUSE_TEST_AMQP_URL")
	if url == "" {
		url = DefaultURL
	}
	conn, err := amqp.DialConfig(url, amqp.Config{Dial: amqp.DefaultDial(3 * time.Second)})
	if err != nil {
		if os.Getenv("GATEHOUSE_REQUIRE_RABBITMQ") == "1" {
			t.Fatalf("RabbitMQ required but unreachable at GATEHOUSE_TEST_AMQP_URL: %v", err)
		}
		t.Skipf("RabbitMQ unreachable (set GATEHOUSE_TEST_AMQP_URL, or GATEHOUSE_REQUIRE_RABBITMQ=1 to fail): %v", err)
	}
	conn.Close()
	return url
}
