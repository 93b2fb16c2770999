package nano_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-redis/redis/v8"

	nano "github.com/domWinter/go-nano"
)

// redisStore keeps a simulated original server's registry in Redis as the
// original did: a string key per pattern, named by the pattern, holding
// the address, with no expiry.
type redisStore struct{ rdb *redis.Client }

func (s redisStore) get(k string) (string, bool) {
	v, err := s.rdb.Get(context.Background(), k).Result()
	return v, err == nil && v != ""
}

func (s redisStore) set(k, v string) { s.rdb.Set(context.Background(), k, v, 0) }

func (s redisStore) del(k string) { s.rdb.Del(context.Background(), k) }

// TestRollingUpgrade: an original server and a server of this library
// with OriginalKeys share one Redis, and route each other's services,
// both ways; registrations, deregistrations and the removal of a service
// that cannot be reached show in the original's keys. A server without
// the setting does not see the original's registrations.
func TestRollingUpgrade(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(&redis.Options{Addr: testRedis.Addr})
	t.Cleanup(func() { rdb.Close() })
	ctx := context.Background()
	// The original's keys have no prefix: patterns of this run's own.
	id := time.Now().UnixNano()
	oldP, newP := fmt.Sprintf("role:upgrade%d,svc:old", id), fmt.Sprintf("role:upgrade%d,svc:new", id)
	t.Cleanup(func() { rdb.Del(ctx, oldP, newP) })

	orig := startOriginalServer(t, redisStore{rdb})
	opts := redisOptions(t, testRedis)
	opts.OriginalKeys = true
	opts.TTL = 3 * time.Second
	_, ours := startServer(t, opts)
	_, off := startServer(t, redisOptions(t, testRedis))

	// An original service registered at the original server is reached
	// through ours, and not through a server without the setting.
	old := startOriginalService(t, orig.addr, oldP, func([]byte) ([]byte, error) { return []byte(`{"Result":"old"}`), nil })
	old.register(t)
	oldMsg := fmt.Sprintf(`{"Pattern":%q}`, oldP+",cmd:x")
	waitAnswer(t, ours, oldMsg, `{"Result":"old"}`)
	if status, body := post(t, "http://"+off+"/", oldMsg); status != http.StatusNotFound {
		t.Errorf("a server without OriginalKeys: %d %s; want 404", status, body)
	}

	// A service of this library registered at ours is reached through the
	// original server; its key expires with its registration.
	svc, _ := startService(t, ours, map[string]nano.HandlerFunc{newP: func([]byte) ([]byte, error) { return []byte(`{"Result":"new"}`), nil }})
	newMsg := fmt.Sprintf(`{"Pattern":%q}`, newP)
	waitAnswer(t, orig.addr, newMsg, `{"Result":"new"}`)
	if pttl, err := rdb.PTTL(ctx, newP).Result(); err != nil || pttl <= 0 || pttl > opts.TTL {
		t.Errorf("PTTL of this library's service's key = %v, %v; want within the TTL", pttl, err)
	}
	if pttl, err := rdb.PTTL(ctx, oldP).Result(); err != nil || pttl != -1 {
		t.Errorf("PTTL of the original service's key = %v, %v; want none (-1)", pttl, err)
	}

	// A registration of this library does not replace an address that
	// has no expiry: the original server would lose a service that never
	// registers again.
	status, body := post(t, "http://"+ours+"/register", fmt.Sprintf(`{"Pattern":%q,"ServiceAddress":"127.0.0.1:1"}`, oldP))
	if status != http.StatusOK {
		t.Fatalf("register: %d %s", status, body)
	}
	if v, _ := rdb.Get(ctx, oldP).Result(); v != old.addr {
		t.Errorf("the original service's key holds %q after a registration of another address; want %q", v, old.addr)
	}
	post(t, "http://"+ours+"/deregister", fmt.Sprintf(`{"Pattern":%q,"ServiceAddress":"127.0.0.1:1"}`, oldP))

	// A deregistration deletes the key: the original server no longer
	// routes to the service.
	svc.Shutdown(ctx)
	if n, _ := rdb.Exists(ctx, newP).Result(); n != 0 {
		t.Errorf("the key of a deregistered service is still there")
	}
	if status, body := post(t, "http://"+orig.addr+"/", newMsg); status != http.StatusNotFound {
		t.Errorf("the original server after the deregistration: %d %s; want 404", status, body)
	}

	// An original service that stopped is removed by the server that
	// finds it gone, key included, as the original's server did.
	old.stop()
	if status, _ := post(t, "http://"+ours+"/", oldMsg); status == http.StatusOK {
		t.Fatal("a stopped service answered")
	}
	eventually(t, "the stopped service's key is deleted", func() bool {
		n, _ := rdb.Exists(ctx, oldP).Result()
		return n == 0
	})

	// It registers again, at our server this time: the key is written
	// with no expiry, and the original server routes to it.
	old.restart(t)
	old.reg.ServerAddress = ours
	old.register(t)
	waitAnswer(t, orig.addr, oldMsg, `{"Result":"old"}`)
	if pttl, err := rdb.PTTL(ctx, oldP).Result(); err != nil || pttl != -1 {
		t.Errorf("PTTL of the key of an original registration at this library's server = %v, %v; want none (-1)", pttl, err)
	}
}

// TestNanoServerOriginalKeys: nano-server takes the setting from
// NANO_ORIGINAL_KEYS (or -original-keys), and refuses it without Redis.
func TestNanoServerOriginalKeys(t *testing.T) {
	t.Parallel()
	bin := buildProgram(t, ".", "./cmd/nano-server")
	rdb := redis.NewClient(&redis.Options{Addr: testRedis.Addr})
	t.Cleanup(func() { rdb.Close() })
	ctx := context.Background()
	pattern := fmt.Sprintf("role:upgrade%d", time.Now().UnixNano())
	t.Cleanup(func() { rdb.Del(ctx, pattern) })

	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	p := startProgram(t, bin, fmt.Sprintf("NANO_PORT=%d", port), "NANO_REDIS_ADDR="+testRedis.Addr,
		"NANO_ORIGINAL_KEYS=true", fmt.Sprintf("NANO_KEY_PREFIX=nanoprog:%d:", time.Now().UnixNano()))
	p.waitOutput(t, "listening")
	reg := fmt.Sprintf(`{"Cache":{},"Pattern":%q,"ServiceAddress":"127.0.0.1:1"}`, pattern)
	if status, body := post(t, fmt.Sprintf("http://127.0.0.1:%d/register", port), reg); status != http.StatusOK {
		t.Fatalf("register: %d %s", status, body)
	}
	if v, err := rdb.Get(ctx, pattern).Result(); err != nil || v != "127.0.0.1:1" {
		t.Errorf("the original's key holds %q (%v); want the registered address", v, err)
	}

	refused := startProgramArgs(t, bin, []string{"-original-keys"}, "NANO_REDIS_ADDR=")
	select {
	case err := <-refused.done:
		refused.done <- err
		if err == nil || !strings.Contains(refused.out.String(), "OriginalKeys needs Redis") {
			t.Errorf("-original-keys without Redis: exit %v, output %s; want a failure naming the setting", err, refused.out.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("-original-keys without Redis is still running")
	}
}
