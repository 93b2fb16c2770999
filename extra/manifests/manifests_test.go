package manifests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// objects are the documents of the manifests in a folder, decoded.
type objects struct {
	deployments  map[string]*appsv1.Deployment
	statefulSets map[string]*appsv1.StatefulSet
	services     map[string]*corev1.Service
	configMaps   map[string]*corev1.ConfigMap
	certificates map[string]*certificate
	kinds        map[string]int
}

// certificate is the part of cert-manager's Certificate (cert-manager.io/v1)
// that the examples use: decoding strictly into it refuses any other field,
// so a misspelt one fails here rather than at kubectl apply.
type certificate struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		IsCA        bool     `json:"isCA,omitempty"`
		CommonName  string   `json:"commonName,omitempty"`
		SecretName  string   `json:"secretName"`
		Duration    string   `json:"duration,omitempty"`
		RenewBefore string   `json:"renewBefore,omitempty"`
		Usages      []string `json:"usages,omitempty"`
		DNSNames    []string `json:"dnsNames,omitempty"`
		URIs        []string `json:"uris,omitempty"`
		PrivateKey  struct {
			Algorithm      string `json:"algorithm"`
			Size           int    `json:"size"`
			RotationPolicy string `json:"rotationPolicy,omitempty"`
		} `json:"privateKey"`
		IssuerRef struct {
			Name string `json:"name"`
			Kind string `json:"kind"`
		} `json:"issuerRef"`
	} `json:"spec"`
}

// issuer is the part of cert-manager's Issuer that the examples use.
type issuer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		SelfSigned *struct{} `json:"selfSigned,omitempty"`
		CA         *struct {
			SecretName string `json:"secretName"`
		} `json:"ca,omitempty"`
	} `json:"spec"`
}

// decodeFolder decodes every document of the folder's manifests strictly
// into its API type, and checks that every pod meets Pod Security
// "restricted".
func decodeFolder(t *testing.T, dir string) objects {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", dir, err)
	}
	o := objects{
		deployments:  map[string]*appsv1.Deployment{},
		statefulSets: map[string]*appsv1.StatefulSet{},
		services:     map[string]*corev1.Service{},
		configMaps:   map[string]*corev1.ConfigMap{},
		certificates: map[string]*certificate{},
		kinds:        map[string]int{},
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range bytes.Split(data, []byte("\n---\n")) {
			var meta metav1.TypeMeta
			if err := yaml.Unmarshal(doc, &meta); err != nil {
				t.Fatalf("%s document %d: %v", f, i, err)
			}
			var obj any
			switch meta.APIVersion + " " + meta.Kind {
			case "apps/v1 Deployment":
				obj = &appsv1.Deployment{}
			case "apps/v1 StatefulSet":
				obj = &appsv1.StatefulSet{}
			case "v1 Service":
				obj = &corev1.Service{}
			case "v1 ServiceAccount":
				obj = &corev1.ServiceAccount{}
			case "v1 ConfigMap":
				obj = &corev1.ConfigMap{}
			case "networking.k8s.io/v1 NetworkPolicy":
				obj = &networkingv1.NetworkPolicy{}
			case "cert-manager.io/v1 Certificate":
				obj = &certificate{}
			case "cert-manager.io/v1 Issuer":
				obj = &issuer{}
			default:
				t.Errorf("%s document %d: unexpected %s %s", f, i, meta.APIVersion, meta.Kind)
				continue
			}
			if err := yaml.UnmarshalStrict(doc, obj); err != nil {
				t.Errorf("%s document %d (%s): %v", f, i, meta.Kind, err)
				continue
			}
			o.kinds[meta.Kind]++
			switch v := obj.(type) {
			case *appsv1.Deployment:
				checkRestricted(t, v.Name, v.Spec.Template.Spec)
				o.deployments[v.Name] = v
			case *appsv1.StatefulSet:
				checkRestricted(t, v.Name, v.Spec.Template.Spec)
				o.statefulSets[v.Name] = v
			case *corev1.Service:
				o.services[v.Name] = v
			case *corev1.ConfigMap:
				o.configMaps[v.Name] = v
			case *certificate:
				o.certificates[v.Name] = v
			}
		}
	}
	return o
}

// TestManifestsDecodeStrictly decodes every document of the Kubernetes
// examples into its API type, refusing unknown fields, and checks that
// every pod meets Pod Security "restricted".
func TestManifestsDecodeStrictly(t *testing.T) {
	plain := decodeFolder(t, "../../_examples/kubernetes")
	if k := plain.kinds; k["Deployment"] != 3 || k["Service"] != 2 || k["NetworkPolicy"] != 1 || len(k) != 3 {
		t.Errorf("_examples/kubernetes: decoded %v; want 3 Deployments, 2 Services and 1 NetworkPolicy", k)
	}
	withTLS := decodeFolder(t, "../../_examples/kubernetes-tls")
	if k := withTLS.kinds; k["Deployment"] != 1 || k["StatefulSet"] != 1 || k["Certificate"] != 3 || k["Issuer"] != 2 || k["ConfigMap"] != 1 {
		t.Errorf("_examples/kubernetes-tls: decoded %v; want a Deployment, a StatefulSet, 3 Certificates, 2 Issuers and a ConfigMap", k)
	}
}

// TestTLSManifests checks what the TLS example must hold together: each
// program reads its certificate files from a mounted Secret that
// cert-manager writes (mounted whole, so that renewals reach the files),
// the certificates cover the names the programs dial and register, the
// identities file authorizes the sum service's identity for its pattern,
// the pods' DNS names exist from the start, and the probes reach a plain
// health port.
func TestTLSManifests(t *testing.T) {
	o := decodeFolder(t, "../../_examples/kubernetes-tls")
	server, sum := o.deployments["nano-server"], o.statefulSets["sum"]
	if server == nil || sum == nil {
		t.Fatal("want the Deployment nano-server and the StatefulSet sum")
	}
	secretOf := map[string]*certificate{}
	for _, c := range o.certificates {
		if !c.Spec.IsCA {
			if c.Spec.IssuerRef.Name != "nano-ca" || !slices.Contains(c.Spec.Usages, "server auth") || !slices.Contains(c.Spec.Usages, "client auth") {
				t.Errorf("Certificate %s: want issuer nano-ca and the server and client usages", c.Name)
			}
			secretOf[c.Spec.SecretName] = c
		}
	}
	certOf := map[string]*certificate{}
	for name, pod := range map[string]corev1.PodSpec{"nano-server": server.Spec.Template.Spec, "sum": sum.Spec.Template.Spec} {
		c := pod.Containers[0]
		env := map[string]string{}
		for _, e := range c.Env {
			env[e.Name] = e.Value
		}
		for _, v := range []string{"NANO_TLS_CERT", "NANO_TLS_KEY", "NANO_TLS_CA"} {
			dir := filepath.Dir(env[v])
			i := slices.IndexFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == dir })
			if i < 0 {
				t.Errorf("%s: %s=%q is in no mounted folder", name, v, env[v])
				continue
			}
			m := c.VolumeMounts[i]
			if m.SubPath != "" {
				t.Errorf("%s: %s mounted with subPath, which renewals never reach", name, m.Name)
			}
			vol := pod.Volumes[slices.IndexFunc(pod.Volumes, func(vol corev1.Volume) bool { return vol.Name == m.Name })]
			if vol.Secret == nil || secretOf[vol.Secret.SecretName] == nil {
				t.Errorf("%s: %s is not in a Secret a Certificate writes", name, v)
				continue
			}
			certOf[name] = secretOf[vol.Secret.SecretName]
		}
		if env["NANO_TLS_CLIENT_CERTS"] != "true" {
			t.Errorf("%s: client certificates are not required", name)
		}
		health := slices.IndexFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == "health" })
		if health < 0 || env["NANO_HEALTH_PORT"] != fmt.Sprint(c.Ports[health].ContainerPort) {
			t.Errorf("%s: the port named health is not NANO_HEALTH_PORT (%q)", name, env["NANO_HEALTH_PORT"])
		}
		for _, p := range []*corev1.Probe{c.StartupProbe, c.ReadinessProbe, c.LivenessProbe} {
			if p != nil && (p.HTTPGet == nil || p.HTTPGet.Port.String() != "health" || p.HTTPGet.Scheme == corev1.URISchemeHTTPS) {
				t.Errorf("%s: a probe does not GET the plain health port", name)
			}
		}
	}
	if certOf["nano-server"] == nil || certOf["sum"] == nil {
		t.Fatal("the programs' certificates were not found")
	}

	// The names dialled and registered are the certificates' own.
	sumEnv := map[string]string{"POD_NAME": "sum-5d8f7c9b4-x2x4z", "POD_NAMESPACE": "default"}
	for _, e := range sum.Spec.Template.Spec.Containers[0].Env {
		if e.Value != "" {
			sumEnv[e.Name] = os.Expand(strings.NewReplacer("$(", "${", ")", "}").Replace(e.Value), func(k string) string { return sumEnv[k] })
		}
	}
	serverHost, _, _ := strings.Cut(sumEnv["NANO_SERVER"], ":")
	if !covers(certOf["nano-server"].Spec.DNSNames, serverHost) {
		t.Errorf("the server's certificate %v does not cover %q, the host services dial", certOf["nano-server"].Spec.DNSNames, serverHost)
	}
	if !covers(certOf["sum"].Spec.DNSNames, sumEnv["NANO_SERVICE_ADDRESS"]) {
		t.Errorf("the sum certificate %v does not cover %q, the address a pod registers", certOf["sum"].Spec.DNSNames, sumEnv["NANO_SERVICE_ADDRESS"])
	}
	headless := o.services[sum.Spec.ServiceName]
	if headless == nil || headless.Spec.ClusterIP != "None" || !headless.Spec.PublishNotReadyAddresses {
		t.Errorf("the sum StatefulSet's serviceName %q is not a headless Service that publishes pods before they are ready", sum.Spec.ServiceName)
	}
	if host := strings.Split(sumEnv["NANO_SERVICE_ADDRESS"], "."); len(host) < 2 || host[1] != sum.Spec.ServiceName {
		t.Errorf("the sum pods register %q, not a name under their Service %q", sumEnv["NANO_SERVICE_ADDRESS"], sum.Spec.ServiceName)
	}

	// The identities file lets the sum service's identity register its
	// pattern, and no other identity any.
	cm := o.configMaps["nano-identities"]
	if cm == nil {
		t.Fatal("no ConfigMap nano-identities")
	}
	var ids map[string][]string
	if err := json.Unmarshal([]byte(cm.Data["identities.json"]), &ids); err != nil {
		t.Fatalf("identities.json: %v", err)
	}
	uri := certOf["sum"].Spec.URIs
	if len(uri) != 1 || !slices.Contains(ids[uri[0]], "role:math,cmd:sum") || len(ids) != 1 {
		t.Errorf("identities %v: want the sum certificate's URI %v allowed role:math,cmd:sum, alone", ids, uri)
	}
}

// covers reports whether one of the DNS names, wildcards included (one
// label, leftmost, as in TLS), covers host.
func covers(names []string, host string) bool {
	for _, n := range names {
		if rest, ok := strings.CutPrefix(n, "*."); ok {
			if label, tail, found := strings.Cut(host, "."); found && label != "" && tail == rest {
				return true
			}
		} else if n == host {
			return true
		}
	}
	return false
}

// checkRestricted fails the test unless the pods of the workload named
// name meet Pod Security "restricted".
func checkRestricted(t *testing.T, name string, pod corev1.PodSpec) {
	t.Helper()
	psc := pod.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: the pod must run as non-root with seccompProfile RuntimeDefault", name)
	}
	for _, c := range append(pod.InitContainers, pod.Containers...) {
		sc := c.SecurityContext
		if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
			sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" || len(sc.Capabilities.Add) > 0 {
			t.Errorf("%s/%s: must not escalate privileges and must drop all capabilities", name, c.Name)
		}
		if sc != nil && sc.Privileged != nil && *sc.Privileged {
			t.Errorf("%s/%s: privileged", name, c.Name)
		}
		for _, e := range c.Env {
			if strings.Contains(strings.ToLower(e.Name), "token") || strings.Contains(strings.ToLower(e.Name), "password") {
				if e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
					t.Errorf("%s/%s: %s must come from a Secret", name, c.Name, e.Name)
				}
			}
		}
	}
	for _, v := range pod.Volumes {
		if v.HostPath != nil {
			t.Errorf("%s: a hostPath volume", name)
		}
	}
}
