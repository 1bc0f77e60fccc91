package main

import (
	"encoding/json"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/mosemu/mosemu/emu/fleet"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// TestKubernetesExample decodes deploy/k8s/fleet.yaml strictly with the
// Kubernetes API types and checks the container's arguments against the
// fleet command's flags, for every pod ordinal.
func TestKubernetesExample(t *testing.T) {
	raw, err := os.ReadFile("../../deploy/k8s/fleet.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var svc *corev1.Service
	var sts *appsv1.StatefulSet
	for _, doc := range regexp.MustCompile(`(?m)^---$`).Split(string(raw), -1) {
		var meta struct{ Kind, APIVersion string }
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatal(err)
		}
		switch meta.APIVersion + " " + meta.Kind {
		case "v1 Service":
			svc = new(corev1.Service)
			err = yaml.UnmarshalStrict([]byte(doc), svc)
		case "apps/v1 StatefulSet":
			sts = new(appsv1.StatefulSet)
			err = yaml.UnmarshalStrict([]byte(doc), sts)
		default:
			t.Fatalf("unexpected document %s %s", meta.APIVersion, meta.Kind)
		}
		if err != nil {
			t.Fatalf("%s: %v", meta.Kind, err)
		}
	}
	if svc == nil || sts == nil {
		t.Fatal("want a Service and a StatefulSet")
	}
	spec := sts.Spec
	if spec.ServiceName != svc.Name || svc.Spec.ClusterIP != "None" {
		t.Fatalf("StatefulSet service %q, headless Service %q (clusterIP %q)", spec.ServiceName, svc.Name, svc.Spec.ClusterIP)
	}
	for k, v := range spec.Selector.MatchLabels {
		if spec.Template.Labels[k] != v || svc.Spec.Selector[k] != v {
			t.Fatalf("label %s=%s not on the pod template and in the Service selector", k, v)
		}
	}
	if len(spec.Template.Spec.Containers) != 1 {
		t.Fatal("want one container")
	}
	c := spec.Template.Spec.Containers[0]
	if strings.Join(c.Command, " ") != "/mosemu" || !strings.Contains(readFile(t, "../../Dockerfile"), `ENTRYPOINT ["/mosemu"]`) {
		t.Fatalf("container command %v does not run the image's /mosemu", c.Command)
	}
	env := map[string]string{}
	for _, e := range c.Env {
		if e.ValueFrom == nil || e.ValueFrom.FieldRef == nil {
			t.Fatalf("env %s: want a field reference", e.Name)
		}
		env[e.Name] = e.ValueFrom.FieldRef.FieldPath
	}
	if env["POD_INDEX"] != "metadata.labels['apps.kubernetes.io/pod-index']" {
		t.Fatalf("POD_INDEX comes from %q, want the pod ordinal label", env["POD_INDEX"])
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if c.ReadinessProbe == nil || ports[c.ReadinessProbe.HTTPGet.Port.StrVal] == 0 {
		t.Fatal("readiness probe on an undeclared port")
	}
	if len(c.Args) == 0 || c.Args[0] != "fleet" {
		t.Fatalf("args %v: want the fleet command", c.Args)
	}
	replicas := int(*spec.Replicas)
	covered, total := 0, 0
	for ordinal := range replicas {
		args := expandEnv(c.Args[1:], map[string]string{"POD_INDEX": strconv.Itoa(ordinal)})
		cmd := fleetCmd()
		if err := cmd.ParseFlags(args); err != nil {
			t.Fatalf("pod %d: args %v: %v", ordinal, args, err)
		}
		if rest := cmd.Flags().Args(); len(rest) != 0 {
			t.Fatalf("pod %d: stray arguments %v", ordinal, rest)
		}
		fl := cmd.Flags()
		count, _ := fl.GetInt("count")
		shardArg, _ := fl.GetString("shard")
		shard, err := fleet.ParseShard(shardArg, count)
		if err != nil {
			t.Fatalf("pod %d: %v", ordinal, err)
		}
		if shard.I != ordinal || shard.N != replicas {
			t.Fatalf("pod %d runs shard %v of a %d-replica set", ordinal, shard, replicas)
		}
		covered, total = covered+shard.Count, count
		metrics, _ := fl.GetString("metrics")
		if _, port, _ := net.SplitHostPort(metrics); port != strconv.Itoa(int(ports["metrics"])) {
			t.Fatalf("--metrics %s, container port %d", metrics, ports["metrics"])
		}
		if b, _ := fl.GetString("external-broker"); b == "" {
			t.Fatal("shards need one --external-broker")
		}
		state, _ := fl.GetString("state")
		mounted := false
		for _, m := range c.VolumeMounts {
			mounted = mounted || strings.HasPrefix(state+"/", m.MountPath+"/")
		}
		if !mounted {
			t.Fatalf("--state %s is not on a volume (the root filesystem is read-only)", state)
		}
		if httpAddr, _ := fl.GetString("http"); !strings.HasPrefix(httpAddr, "0.0.0.0:") {
			t.Fatalf("--http %s: devices unreachable from outside the pod", httpAddr)
		}
	}
	if covered != total {
		t.Fatalf("the shards run %d of %d devices", covered, total)
	}
	// The Dockerfile's default command parses too.
	m := regexp.MustCompile(`(?m)^CMD (\[.*\])$`).FindStringSubmatch(readFile(t, "../../Dockerfile"))
	var cmdArgs []string
	if m == nil || json.Unmarshal([]byte(m[1]), &cmdArgs) != nil || cmdArgs[0] != "fleet" {
		t.Fatalf("Dockerfile CMD %v", m)
	}
	if err := fleetCmd().ParseFlags(cmdArgs[1:]); err != nil {
		t.Fatalf("Dockerfile CMD: %v", err)
	}
}

// expandEnv does what the kubelet does to $(VAR) in args.
func expandEnv(args []string, env map[string]string) []string {
	out := make([]string, len(args))
	re := regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)
	for i, a := range args {
		out[i] = re.ReplaceAllStringFunc(a, func(s string) string {
			if v, ok := env[s[2:len(s)-1]]; ok {
				return v
			}
			return s
		})
	}
	return out
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
