package manifests_test

import (
	"bytes"
	"errors"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// object is the part of a Kubernetes object the checks read.
type object struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name      string            `yaml:"name"`
		Namespace string            `yaml:"namespace"`
		Labels    map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Spec struct {
		// Deployment
		Template struct {
			Metadata struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"metadata"`
			Spec struct {
				Containers []struct {
					Image string   `yaml:"image"`
					Args  []string `yaml:"args"`
					Ports []struct {
						Name          string `yaml:"name"`
						ContainerPort int    `yaml:"containerPort"`
					} `yaml:"ports"`
					Env []struct {
						Name      string `yaml:"name"`
						Value     string `yaml:"value"`
						ValueFrom struct {
							SecretKeyRef struct {
								Name     string `yaml:"name"`
								Key      string `yaml:"key"`
								Optional bool   `yaml:"optional"`
							} `yaml:"secretKeyRef"`
						} `yaml:"valueFrom"`
					} `yaml:"env"`
				} `yaml:"containers"`
			} `yaml:"spec"`
		} `yaml:"template"`
		// Service
		Ports []struct {
			Name       string `yaml:"name"`
			Port       int    `yaml:"port"`
			TargetPort any    `yaml:"targetPort"`
		} `yaml:"ports"`
		// NetworkPolicy
		PodSelector selector `yaml:"podSelector"`
		PolicyTypes []string `yaml:"policyTypes"`
		Ingress     []rule   `yaml:"ingress"`
		Egress      []rule   `yaml:"egress"`
	} `yaml:"spec"`
}

type selector struct {
	MatchLabels      map[string]string `yaml:"matchLabels"`
	MatchExpressions []struct {
		Key      string   `yaml:"key"`
		Operator string   `yaml:"operator"`
		Values   []string `yaml:"values"`
	} `yaml:"matchExpressions"`
}

func (s *selector) matches(labels map[string]string) bool {
	for k, v := range s.MatchLabels {
		if labels[k] != v {
			return false
		}
	}
	for _, e := range s.MatchExpressions {
		v, ok := labels[e.Key]
		switch e.Operator {
		case "In":
			if !ok || !contains(e.Values, v) {
				return false
			}
		case "NotIn":
			if ok && contains(e.Values, v) {
				return false
			}
		case "Exists":
			if !ok {
				return false
			}
		case "DoesNotExist":
			if ok {
				return false
			}
		}
	}
	return true
}

type peer struct {
	PodSelector       *selector `yaml:"podSelector"`
	NamespaceSelector *selector `yaml:"namespaceSelector"`
	IPBlock           any       `yaml:"ipBlock"`
}

type rule struct {
	From  []peer `yaml:"from"`
	To    []peer `yaml:"to"`
	Ports []struct {
		Port     any    `yaml:"port"`
		Protocol string `yaml:"protocol"`
	} `yaml:"ports"`
}

func contains(vs []string, v string) bool {
	for _, x := range vs {
		if x == v {
			return true
		}
	}
	return false
}

// pod is a workload in the model cluster.
type pod struct {
	ns     string
	labels map[string]string
	ports  map[string]int // name -> port
}

func (p pod) nsLabels() map[string]string {
	return map[string]string{"kubernetes.io/metadata.name": p.ns}
}

// kustomizeModule is built and run when neither kubectl nor kustomize is
// installed.
const kustomizeModule = "sigs.k8s.io/kustomize/kustomize/v5@v5.5.0"

// render builds an overlay with kubectl's kustomize, a kustomize binary, or
// (without either) kustomize built from the Go module proxy.
func render(t *testing.T, dir string) []object {
	t.Helper()
	var cmd *exec.Cmd
	if k, err := exec.LookPath("kubectl"); err == nil {
		cmd = exec.Command(k, "kustomize", dir)
	} else if k, err := exec.LookPath("kustomize"); err == nil {
		cmd = exec.Command(k, "build", dir)
	} else {
		cmd = exec.Command("go", "run", kustomizeModule, "build", dir)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kustomize %s: %v\n%s", dir, err, stderr.String())
	}
	dec := yaml.NewDecoder(bytes.NewReader(out))
	var objs []object
	for {
		var o object
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, o)
	}
	return objs
}

// cluster is the rendered overlay plus the dependencies and clients around
// it, with a NetworkPolicy evaluator.
type cluster struct {
	policies []object
	pods     map[string]pod
}

func newCluster(t *testing.T, objs []object) *cluster {
	c := &cluster{pods: map[string]pod{
		"nats":       {ns: "parley", labels: map[string]string{"app.kubernetes.io/name": "nats"}, ports: map[string]int{"nats": 4222, "cluster": 6222, "monitor": 8222}},
		"postgresql": {ns: "parley", labels: map[string]string{"app.kubernetes.io/name": "postgresql"}, ports: map[string]int{"tcp-postgresql": 5432}},
		"clickhouse": {ns: "parley", labels: map[string]string{"app.kubernetes.io/name": "clickhouse"}, ports: map[string]int{"tcp": 9000, "http": 8123}},
		"kube-dns":   {ns: "kube-system", labels: map[string]string{"k8s-app": "kube-dns"}, ports: map[string]int{"dns": 53}},
		"prometheus": {ns: "monitoring", labels: map[string]string{"app.kubernetes.io/name": "prometheus"}},
		"client":     {ns: "web", labels: map[string]string{"app": "bot"}},
		"stranger":   {ns: "parley", labels: map[string]string{"app": "stranger"}, ports: map[string]int{"http": 8080}},
		"internet":   {ns: "", labels: map[string]string{}, ports: map[string]int{"https": 443, "submission": 587, "smtps": 465, "smtp": 25}},
	}}
	for _, o := range objs {
		switch o.Kind {
		case "NetworkPolicy":
			c.policies = append(c.policies, o)
		case "Deployment":
			p := pod{ns: o.Metadata.Namespace, labels: o.Spec.Template.Metadata.Labels, ports: map[string]int{}}
			for _, ct := range o.Spec.Template.Spec.Containers {
				for _, port := range ct.Ports {
					p.ports[port.Name] = port.ContainerPort
				}
			}
			c.pods[o.Metadata.Name] = p
		}
	}
	for _, n := range []string{"ingest", "lifecycle", "tagging", "reporting", "notification"} {
		if _, ok := c.pods[n]; !ok {
			t.Fatalf("no Deployment %s", n)
		}
	}
	return c
}

func (c *cluster) peerMatches(pol object, pr peer, other pod) bool {
	if pr.IPBlock != nil {
		return other.ns == "" // only the outside world is addressed by IP
	}
	if other.ns == "" {
		return false
	}
	if pr.NamespaceSelector != nil && !pr.NamespaceSelector.matches(other.nsLabels()) {
		return false
	}
	if pr.NamespaceSelector == nil && other.ns != pol.Metadata.Namespace {
		return false
	}
	return pr.PodSelector == nil || pr.PodSelector.matches(other.labels)
}

func portMatches(r rule, dst pod, port int, proto string) bool {
	if len(r.Ports) == 0 {
		return true
	}
	for _, p := range r.Ports {
		pp := p.Protocol
		if pp == "" {
			pp = "TCP"
		}
		if pp != proto {
			continue
		}
		switch v := p.Port.(type) {
		case int:
			if v == port {
				return true
			}
		case string:
			if n, err := strconv.Atoi(v); err == nil && n == port {
				return true
			}
			if dst.ports[v] == port {
				return true
			}
		case nil:
			return true
		}
	}
	return false
}

// allowed reports whether src may open a connection to dst's port.
func (c *cluster) allowed(src, dst pod, port int, proto string) bool {
	return c.direction(src, dst, port, proto, "Egress") && c.direction(dst, src, port, proto, "Ingress")
}

// direction evaluates the policies selecting subject for one direction.
func (c *cluster) direction(subject, other pod, port int, proto, typ string) bool {
	dst := subject
	if typ == "Egress" {
		dst = other
	}
	isolated := false
	for _, pol := range c.policies {
		if subject.ns != pol.Metadata.Namespace || !pol.Spec.PodSelector.matches(subject.labels) || !contains(pol.Spec.PolicyTypes, typ) {
			continue
		}
		isolated = true
		rules := pol.Spec.Ingress
		if typ == "Egress" {
			rules = pol.Spec.Egress
		}
		for _, r := range rules {
			peers := r.From
			if typ == "Egress" {
				peers = r.To
			}
			ok := len(peers) == 0
			for _, pr := range peers {
				if c.peerMatches(pol, pr, other) {
					ok = true
				}
			}
			if ok && portMatches(r, dst, port, proto) {
				return true
			}
		}
	}
	return !isolated
}

// TestNetworkPolicies: with the base's policies, exactly the flows the
// architecture needs are open, in both overlays.
func TestNetworkPolicies(t *testing.T) {
	for _, overlay := range []string{"local", "production"} {
		t.Run(overlay, func(t *testing.T) {
			c := newCluster(t, render(t, "../../deploy/kustomize/overlays/"+overlay))
			services := []string{"ingest", "lifecycle", "tagging", "reporting", "notification"}
			grpcPort := map[string]int{"ingest": 7101, "lifecycle": 7102, "tagging": 7103, "reporting": 7104, "notification": 7105}
			type flow struct {
				src, dst string
				port     int
				proto    string
				want     bool
			}
			var flows []flow
			for _, s := range services {
				admin := grpcPort[s] + 100
				flows = append(flows,
					flow{s, "nats", 4222, "TCP", true},
					flow{s, "postgresql", 5432, "TCP", true},
					flow{s, "kube-dns", 53, "UDP", true},
					flow{s, "clickhouse", 9000, "TCP", s == "reporting"},
					flow{s, "internet", 443, "TCP", s == "notification"}, // webhooks
					flow{s, "internet", 587, "TCP", s == "notification"}, // SMTP submission (STARTTLS)
					flow{s, "internet", 465, "TCP", s == "notification"}, // SMTPS
					flow{s, "internet", 25, "TCP", false},                // relay port: never
					flow{s, "stranger", 8080, "TCP", false},
					flow{s, "nats", 8222, "TCP", false},
					flow{"client", s, grpcPort[s], "TCP", true},
					flow{"prometheus", s, admin, "TCP", true},
					flow{"client", s, admin, "TCP", false},
					flow{"stranger", s, admin, "TCP", false},
				)
				for _, o := range services {
					if o != s {
						flows = append(flows, flow{s, o, grpcPort[o] + 100, "TCP", false})
					}
				}
			}
			flows = append(flows,
				flow{"client", "ingest", 7301, "TCP", true},
				flow{"client", "reporting", 7304, "TCP", true},
				flow{"client", "notification", 7305, "TCP", true},
				flow{"stranger", "notification", 7305, "TCP", true},
				flow{"stranger", "nats", 4222, "TCP", false},
				flow{"stranger", "postgresql", 5432, "TCP", false},
				flow{"stranger", "clickhouse", 9000, "TCP", false},
				flow{"client", "nats", 4222, "TCP", false},
				flow{"nats", "nats", 6222, "TCP", true},
				flow{"prometheus", "nats", 8222, "TCP", true},
				flow{"prometheus", "nats", 4222, "TCP", false},
			)
			for _, f := range flows {
				if got := c.allowed(c.pods[f.src], c.pods[f.dst], f.port, f.proto); got != f.want {
					t.Errorf("%s -> %s:%d/%s allowed = %v, want %v", f.src, f.dst, f.port, f.proto, got, f.want)
				}
			}
		})
	}
}

// TestManifestsHardening: admin ports listen on every interface in the
// cluster (Prometheus and the kubelet reach them; the policies above guard
// them), pprof stays off, every service has its own NATS user, and only
// ingest manages the streams.
func TestManifestsHardening(t *testing.T) {
	objs := render(t, "../../deploy/kustomize/overlays/production")
	n := 0
	for _, o := range objs {
		if o.Kind != "Deployment" {
			continue
		}
		n++
		env := map[string]string{}
		for _, ct := range o.Spec.Template.Spec.Containers {
			for _, e := range ct.Env {
				env[e.Name] = e.Value
			}
		}
		name := o.Metadata.Name
		up := strings.ToUpper(name)
		if !strings.HasPrefix(env["PARLEY_"+up+"_ADMIN_ADDR"], "0.0.0.0:") {
			t.Errorf("%s: PARLEY_%s_ADMIN_ADDR = %q", name, up, env["PARLEY_"+up+"_ADMIN_ADDR"])
		}
		if v, ok := env["PARLEY_PPROF_ENABLED"]; ok && v != "false" {
			t.Errorf("%s: pprof enabled", name)
		}
		if env["PARLEY_NATS_USER"] != name {
			t.Errorf("%s: NATS user %q", name, env["PARLEY_NATS_USER"])
		}
		if _, ok := env["PARLEY_NATS_PASSWORD"]; !ok {
			t.Errorf("%s: no NATS password", name)
		}
		if wait := env["PARLEY_NATS_WAIT_FOR_STREAMS"] == "true"; wait != (name != "ingest") {
			t.Errorf("%s: PARLEY_NATS_WAIT_FOR_STREAMS = %q", name, env["PARLEY_NATS_WAIT_FOR_STREAMS"])
		}
	}
	if n != 5 {
		t.Fatalf("%d Deployments, want 5", n)
	}
}

// TestNotificationHTTPAndSMTP: notification's HTTP/JSON port 7305 is in
// its Deployment (listening on every interface) and Service, and the SMTP
// settings come from the parley-smtp Secret (optional keys, so a
// deployment without email still starts), in both overlays.
func TestNotificationHTTPAndSMTP(t *testing.T) {
	for _, overlay := range []string{"local", "production"} {
		t.Run(overlay, func(t *testing.T) {
			var deployment, service bool
			for _, o := range render(t, "../../deploy/kustomize/overlays/"+overlay) {
				if o.Metadata.Name != "notification" {
					continue
				}
				switch o.Kind {
				case "Deployment":
					deployment = true
					ct := o.Spec.Template.Spec.Containers[0]
					port := 0
					for _, p := range ct.Ports {
						if p.Name == "http" {
							port = p.ContainerPort
						}
					}
					if port != 7305 {
						t.Errorf("container port http = %d, want 7305", port)
					}
					env := map[string]string{}
					secret := map[string]string{}
					for _, e := range ct.Env {
						env[e.Name] = e.Value
						if r := e.ValueFrom.SecretKeyRef; r.Name != "" {
							if r.Name != "parley-smtp" && strings.HasPrefix(e.Name, "PARLEY_SMTP_") {
								t.Errorf("%s from Secret %s, want parley-smtp", e.Name, r.Name)
							}
							if r.Name == "parley-smtp" && !r.Optional {
								t.Errorf("%s: secretKeyRef not optional", e.Name)
							}
							secret[e.Name] = r.Key
						}
					}
					if env["PARLEY_NOTIFICATION_HTTP_ADDR"] != "0.0.0.0:7305" {
						t.Errorf("PARLEY_NOTIFICATION_HTTP_ADDR = %q", env["PARLEY_NOTIFICATION_HTTP_ADDR"])
					}
					for name, key := range map[string]string{"PARLEY_SMTP_HOST": "host", "PARLEY_SMTP_PORT": "port", "PARLEY_SMTP_USERNAME": "username",
						"PARLEY_SMTP_PASSWORD": "password", "PARLEY_SMTP_TLS": "tls", "PARLEY_SMTP_FROM": "from"} {
						if secret[name] != key {
							t.Errorf("%s from Secret key %q, want %q", name, secret[name], key)
						}
					}
				case "Service":
					service = true
					found := false
					for _, p := range o.Spec.Ports {
						if p.Name == "http" && p.Port == 7305 && p.TargetPort == "http" {
							found = true
						}
					}
					if !found {
						t.Errorf("Service ports %+v: no http 7305 -> http", o.Spec.Ports)
					}
				}
			}
			if !deployment || !service {
				t.Fatalf("Deployment %v, Service %v", deployment, service)
			}
		})
	}
}

// TestOneImageForEveryService: every Deployment runs the one parley image
// (its binary runs any service) and passes its own -target, in both
// overlays.
func TestOneImageForEveryService(t *testing.T) {
	for overlay, image := range map[string]string{
		"local":      "parley:latest",
		"production": "registry.example.com/parley/parley:CHANGE-ME",
	} {
		t.Run(overlay, func(t *testing.T) {
			n := 0
			for _, o := range render(t, "../../deploy/kustomize/overlays/"+overlay) {
				if o.Kind != "Deployment" {
					continue
				}
				n++
				cs := o.Spec.Template.Spec.Containers
				if len(cs) != 1 {
					t.Fatalf("%s: %d containers", o.Metadata.Name, len(cs))
				}
				if cs[0].Image != image {
					t.Errorf("%s: image %q, want %q", o.Metadata.Name, cs[0].Image, image)
				}
				if want := []string{"-target=" + o.Metadata.Name}; strings.Join(cs[0].Args, " ") != strings.Join(want, " ") {
					t.Errorf("%s: args %q, want %q", o.Metadata.Name, cs[0].Args, want)
				}
			}
			if n != 5 {
				t.Fatalf("%d Deployments, want 5", n)
			}
		})
	}
}
