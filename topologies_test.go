package nano_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-redis/redis/v8"

	nano "github.com/domWinter/go-nano"
)

// Redis Sentinel and Redis Cluster, started from the redis-server binary
// on loopback ports: the registry works through redis.UniversalOptions
// with either.

// TestSentinel runs the registry on a master found through a Sentinel.
func TestSentinel(t *testing.T) {
	t.Parallel()
	bin := redisBinary(t)
	master := runRedis(t, bin, nil)
	dir := t.TempDir()
	conf := filepath.Join(dir, "sentinel.conf")
	err := os.WriteFile(conf, []byte(fmt.Sprintf("sentinel monitor nanotest %s 1\n", strings.Replace(master, ":", " ", 1))), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	sentinel := runRedis(t, bin, []string{conf, "--sentinel"})

	opts := nano.ServerOptions{Redis: &redis.UniversalOptions{MasterName: "nanotest", Addrs: []string{sentinel}}}
	checkSharedRegistry(t, opts)
}

// TestCluster runs the registry on a three-master Redis Cluster, so that
// the patterns of one lookup pipeline and of one resync fall on several
// nodes.
func TestCluster(t *testing.T) {
	t.Parallel()
	bin := redisBinary(t)
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Skip("redis-cli not found")
	}
	var nodes []string
	for range 3 {
		nodes = append(nodes, runRedis(t, bin, []string{"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"}))
	}
	create := exec.Command(cli, append(append([]string{"--cluster", "create"}, nodes...), "--cluster-replicas", "0", "--cluster-yes")...)
	if out, err := create.CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, node := range nodes {
		rdb := redis.NewClient(&redis.Options{Addr: node})
		eventually(t, node+" sees the cluster up", func() bool {
			info, err := rdb.ClusterInfo(context.Background()).Result()
			return err == nil && strings.Contains(info, "cluster_state:ok")
		})
		rdb.Close()
	}

	opts := nano.ServerOptions{Redis: &redis.UniversalOptions{Addrs: nodes}}
	checkSharedRegistry(t, opts)
	checkChangesOnOneNode(t, opts, nodes)
}

// checkChangesOnOneNode registers a pattern on a Cluster and checks that
// the change went to one node, the one that holds the pattern's keys,
// which share one slot: nothing is published to every node.
func checkChangesOnOneNode(t *testing.T, opts nano.ServerOptions, nodes []string) {
	t.Helper()
	opts.KeyPrefix = "nanotest:" + t.Name() + ":one-node:"
	_, a := startServer(t, opts)
	clients := make([]*redis.Client, len(nodes))
	for i, n := range nodes {
		clients[i] = redis.NewClient(&redis.Options{Addr: n})
		defer clients[i].Close()
	}
	streamEntries := func() (total int64, per []int64) {
		for _, c := range clients {
			var n int64
			keys, _ := c.Keys(context.Background(), nano.EscapeGlob(opts.KeyPrefix)+"*changes").Result()
			for _, k := range keys {
				l, _ := c.XLen(context.Background(), k).Result()
				n += l
			}
			per = append(per, n)
			total += n
		}
		return total, per
	}
	published := func() (n int64) {
		for _, c := range clients {
			info, _ := c.Info(context.Background(), "stats").Result()
			for _, line := range strings.Split(info, "\r\n") {
				if v, ok := strings.CutPrefix(line, "pubsub_channels:"); ok && v != "0" {
					n++
				}
			}
		}
		return n
	}
	before, _ := streamEntries()
	registerAt(t, a, "role:one-node", "127.0.0.1:1")
	after, per := streamEntries()
	if after-before != 1 {
		t.Fatalf("a registration wrote %d changes over the nodes (%v); want 1", after-before, per)
	}
	if n := published(); n != 0 {
		t.Errorf("%d nodes have pub/sub channels; want none", n)
	}
	// The pattern's set and its shard's keys are on one node, in one slot.
	var slots []int64
	for _, c := range clients {
		keys, _ := c.Keys(context.Background(), nano.EscapeGlob(opts.KeyPrefix)+"*").Result()
		for _, k := range keys {
			if strings.HasSuffix(k, "pattern:role:one-node") {
				tag := strings.TrimSuffix(k, "pattern:role:one-node")
				for _, kk := range []string{k, tag + "changes", tag + "deadlines", tag + "epoch", tag + "seq"} {
					if n, err := c.Exists(context.Background(), kk).Result(); err != nil || n != 1 {
						t.Errorf("%s is not on the node that holds %s", kk, k)
					}
					slot, _ := c.ClusterKeySlot(context.Background(), kk).Result()
					slots = append(slots, slot)
				}
			}
		}
	}
	if len(slots) != 5 || slices.Max(slots) != slices.Min(slots) {
		t.Errorf("the slots of the pattern's keys: %v; want five equal", slots)
	}
}

// checkSharedRegistry registers patterns through one server and checks
// that a second one, started before, and a third, started after, route
// them all; and that a deregistration reaches the others.
func checkSharedRegistry(t *testing.T, opts nano.ServerOptions) {
	t.Helper()
	opts.KeyPrefix = "nanotest:" + t.Name() + ":"
	_, a := startServer(t, opts)
	_, b := startServer(t, opts)
	echo := idService(t, "127.0.0.1:1", "role:t", "echo")
	const n = 20
	for i := range n {
		reg := fmt.Sprintf(`{"Pattern":"role:t,n:%d","ServiceAddress":%q}`, i, echo)
		if status, body := post(t, "http://"+a+"/register", reg); status != http.StatusOK {
			t.Fatalf("register %d: %d %s", i, status, body)
		}
	}
	_, c := startServer(t, opts)
	for _, addr := range []string{b, c} {
		for i := range n {
			waitAnswer(t, addr, fmt.Sprintf(`{"Pattern":"role:t,n:%d,x:y"}`, i), `{"ID":"echo"}`)
		}
	}
	reg := fmt.Sprintf(`{"Pattern":"role:t,n:0","ServiceAddress":%q}`, echo)
	if status, body := post(t, "http://"+a+"/deregister", reg); status != http.StatusOK {
		t.Fatalf("deregister: %d %s", status, body)
	}
	for _, addr := range []string{b, c} {
		eventually(t, "the deregistration reaches "+addr, func() bool { return resolveCount(t, addr, "role:t,n:0") == 0 })
	}
}

func redisBinary(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server not found: Sentinel and Cluster need the real one")
	}
	return bin
}

// runRedis starts redis-server with extra arguments (a config file first,
// if any) on a free port in a folder of its own, stopped when the test
// ends, and returns its address once it answers.
func runRedis(t *testing.T, bin string, extra []string) string {
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var args []string
	if len(extra) > 0 && !strings.HasPrefix(extra[0], "--") {
		args, extra = append(args, extra[0]), extra[1:]
	}
	args = append(append(args, redisArgs(port, dir)...), extra...)
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	for deadline := time.Now().Add(10 * time.Second); rdb.Ping(context.Background()).Err() != nil; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "redis.log"))
			t.Fatalf("redis-server %v did not start:\n%s", args, log)
		}
	}
	return addr
}
