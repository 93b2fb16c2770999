package nano_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// yamlDocs parses every document of a YAML file.
func yamlDocs(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var docs []map[string]any
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var d map[string]any
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		docs = append(docs, d)
	}
}

// dig follows keys (strings for maps, ints for lists) into a parsed
// document; nil when the path does not exist.
func dig(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func TestKubernetesManifests(t *testing.T) {
	files, _ := filepath.Glob("_examples/kubernetes/*.yaml")
	kinds := map[string]map[string]any{} // "Kind/name" -> document
	for _, f := range files {
		for _, d := range yamlDocs(t, f) {
			if d["apiVersion"] == nil || d["kind"] == nil || dig(d, "metadata", "name") == nil {
				t.Errorf("%s: a document without apiVersion, kind or metadata.name", f)
				continue
			}
			kinds[d["kind"].(string)+"/"+dig(d, "metadata", "name").(string)] = d
		}
	}
	for _, want := range []string{"Deployment/redis", "Service/redis", "NetworkPolicy/redis", "Deployment/nano-server", "Service/nano-server", "Deployment/sum"} {
		if kinds[want] == nil {
			t.Errorf("no %s", want)
		}
	}
	for k := range kinds {
		if strings.HasPrefix(k, "Secret/") {
			t.Errorf("%s is committed: secrets must be made by the user", k)
		}
	}
	// Pod Security "restricted", for every pod, Redis's included.
	for _, name := range []string{"Deployment/nano-server", "Deployment/sum", "Deployment/redis"} {
		pod := dig(kinds[name], "spec", "template", "spec")
		if dig(pod, "securityContext", "runAsNonRoot") != true || dig(pod, "securityContext", "seccompProfile", "type") != "RuntimeDefault" {
			t.Errorf("%s: the pod must run as non-root with seccompProfile RuntimeDefault", name)
		}
		containers, _ := dig(pod, "containers").([]any)
		for _, c := range containers {
			if dig(c, "securityContext", "allowPrivilegeEscalation") != false || dig(c, "securityContext", "capabilities", "drop", 0) != "ALL" {
				t.Errorf("%s: container %v must not escalate and must drop all capabilities", name, dig(c, "name"))
			}
		}
	}
	// Redis asks for the password of a secret, which the servers send, and
	// only the servers may reach it.
	redisC := dig(kinds["Deployment/redis"], "spec", "template", "spec", "containers", 0)
	if args := fmt.Sprint(dig(redisC, "args")); !strings.Contains(args, "--requirepass $(REDIS_PASSWORD)") {
		t.Errorf("Redis's args %s do not require the password", args)
	}
	if !fromSecret(dig(redisC, "env"), "REDIS_PASSWORD", "nano-redis") || !fromSecret(dig(kinds["Deployment/nano-server"], "spec", "template", "spec", "containers", 0, "env"), "NANO_REDIS_PASSWORD", "nano-redis") {
		t.Errorf("Redis and the servers do not share the password of the nano-redis secret")
	}
	if img := fmt.Sprint(dig(redisC, "image")); !strings.Contains(img, "@sha256:") {
		t.Errorf("the Kubernetes Redis image is named by tag only: %s", img)
	}
	np := kinds["NetworkPolicy/redis"]
	if dig(np, "spec", "podSelector", "matchLabels", "app") != "redis" || dig(np, "spec", "ingress", 0, "from", 0, "podSelector", "matchLabels", "app") != "nano-server" || dig(np, "spec", "ingress", 1) != nil {
		t.Errorf("the NetworkPolicy does not let the servers, and only them, reach Redis: %v", np)
	}
	if r := dig(kinds["Deployment/nano-server"], "spec", "replicas"); r != 3 {
		t.Errorf("nano-server replicas: %v; want 3", r)
	}
	if r, _ := dig(kinds["Deployment/sum"], "spec", "replicas").(int); r < 2 {
		t.Errorf("sum replicas: %d; want at least 2", r)
	}
	for _, name := range []string{"Deployment/nano-server", "Deployment/sum", "Deployment/redis"} {
		c := dig(kinds[name], "spec", "template", "spec", "containers", 0)
		for _, field := range []string{"readinessProbe", "livenessProbe"} {
			if dig(c, field) == nil {
				t.Errorf("%s has no %s", name, field)
			}
		}
		if dig(c, "resources", "requests", "cpu") == nil || dig(c, "resources", "requests", "memory") == nil {
			t.Errorf("%s has no resource requests", name)
		}
		if name == "Deployment/redis" {
			continue
		}
		if !fromSecret(dig(c, "env"), "NANO_TOKEN", "nano-token") {
			t.Errorf("%s does not take NANO_TOKEN from the secret", name)
		}
		if dig(kinds[name], "spec", "template", "spec", "securityContext", "runAsNonRoot") != true {
			t.Errorf("%s may run as root", name)
		}
	}
}

// fromSecret reports whether the env list of a container takes the
// variable name from the secret.
func fromSecret(env any, name, secret string) bool {
	list, _ := env.([]any)
	for _, e := range list {
		if dig(e, "name") == name && dig(e, "valueFrom", "secretKeyRef", "name") == secret {
			return true
		}
	}
	return false
}

func TestDockerCompose(t *testing.T) {
	docs := yamlDocs(t, "_examples/docker/docker-compose.yml")
	if len(docs) != 1 {
		t.Fatalf("%d documents", len(docs))
	}
	services := dig(docs[0], "services")
	for _, name := range []string{"redis", "nano-server", "sum"} {
		if dig(services, name, "healthcheck", "test") == nil {
			t.Errorf("service %s has no health check", name)
		}
	}
	if r := dig(services, "sum", "deploy", "replicas"); r != 2 {
		t.Errorf("sum replicas: %v; want 2", r)
	}
	if dig(services, "nano-server", "environment", "NANO_REDIS_ADDR") != "redis:6379" {
		t.Errorf("the server does not use the compose Redis")
	}
	if cmd := fmt.Sprint(dig(services, "redis", "command")); !strings.Contains(cmd, "--requirepass") ||
		!strings.Contains(fmt.Sprint(dig(services, "nano-server", "environment", "NANO_REDIS_PASSWORD")), "NANO_REDIS_PASSWORD:?") {
		t.Errorf("Redis does not require the password the server is given: %s", cmd)
	}
	if fmt.Sprint(dig(services, "redis", "networks")) != "[registry]" || dig(docs[0], "networks", "registry", "internal") != true ||
		slices.Contains(dig(services, "sum", "networks").([]any), any("registry")) {
		t.Errorf("Redis must be on an internal network of its own with the server only")
	}
	ignore, err := os.ReadFile(".dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{".git", "testdata", "**/*_test.go"} {
		if !slices.Contains(strings.Split(string(ignore), "\n"), want) {
			t.Errorf(".dockerignore does not leave out %s", want)
		}
	}
	for _, name := range []string{"nano-server", "sum"} {
		df := dig(services, name, "build", "dockerfile")
		if df == nil {
			t.Fatalf("service %s is not built here", name)
		}
		if _, err := os.Stat(filepath.Join("_examples/docker", dig(services, name, "build", "context").(string), df.(string))); err != nil {
			t.Errorf("service %s: %v", name, err)
		}
	}
	b, err := os.ReadFile("_examples/docker/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "FROM ") && !strings.Contains(line, "@sha256:") {
			t.Errorf("the Dockerfile names a base image by tag only: %s", line)
		}
	}
	if img := fmt.Sprint(dig(services, "redis", "image")); !strings.Contains(img, "@sha256:") {
		t.Errorf("compose's Redis image is named by tag only: %s", img)
	}
	for _, want := range []string{"CGO_ENABLED=0", "AS build", "USER 65532", "nonroot", "imagetools inspect"} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("the Dockerfile lacks %q", want)
		}
	}
}
