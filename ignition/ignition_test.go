package ignition

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kindlingboot/kindling/ignition/stages"
)

func TestRunOnlyOnFirstBoot(t *testing.T) {
	var out bytes.Buffer
	rep, err := Run(context.Background(), Config{Mode: ModeRun, Root: t.TempDir(), Source: "/nonexistent", Console: &out})
	if err != nil || rep.Result != ResultSkipped || !strings.Contains(rep.Reason, "not the first boot") {
		t.Errorf("Run without firstboot = %+v, %v; want skipped, not the first boot", rep, err)
	}
	if !strings.Contains(out.String(), "nothing to do") {
		t.Errorf("console = %q, want it to say there is nothing to do", out.String())
	}
}

func TestRunApplyAndRerun(t *testing.T) {
	root := t.TempDir()
	cfg := filepath.Join(t.TempDir(), "c.ign")
	if err := os.WriteFile(cfg, []byte(`{"ignition":{"version":"3.6.0"},"storage":{"files":[{"path":"/etc/motd","contents":{"source":"data:,hi"}}]}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	rep, err := Run(context.Background(), Config{Mode: ModeApply, Root: root, Source: cfg})
	if err != nil || rep.Result != ResultSuccess {
		t.Fatalf("Run(apply) = %+v, %v; want success", rep, err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "etc/motd")); string(b) != "hi" {
		t.Errorf("/etc/motd = %q, want hi", b)
	}
	names := []string{}
	for _, s := range rep.Stages {
		names = append(names, s.Name)
	}
	if diff := cmp.Diff([]string{"fetch", "files", "report"}, names); diff != "" {
		t.Errorf("stages (-want +got):\n%s", diff)
	}
	rep, err = Run(context.Background(), Config{Mode: ModeApply, Root: root, Source: cfg})
	if err != nil || rep.Result != ResultSkipped || !strings.Contains(rep.Reason, "already provisioned") {
		t.Errorf("rerun = %+v, %v; want skipped, already provisioned", rep, err)
	}
	// Forced, the stages run again: the file exists and overwrite is unset.
	if _, err = Run(context.Background(), Config{Mode: ModeApply, Root: root, Source: cfg, Force: true}); err == nil || !strings.Contains(err.Error(), "overwrite is false") {
		t.Errorf("forced rerun = %v, want the files stage to run and refuse to overwrite /etc/motd", err)
	}
}

func TestRunInvalidConfig(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "c.ign")
	os.WriteFile(cfg, []byte(`{"ignition":{"version":"2.2.0"}}`), 0o644)
	rep, err := Run(context.Background(), Config{Mode: ModeApply, Root: t.TempDir(), Source: cfg})
	if !errors.Is(err, ErrInvalidConfig) || rep.Result != ResultFailure || rep.Stage != "fetch" {
		t.Errorf("Run(2.2.0 config) = %+v, %v; want an ErrInvalidConfig failure in stage fetch", rep, err)
	}
}

func TestPlanTouchesNothing(t *testing.T) {
	root := t.TempDir()
	cfg := filepath.Join(t.TempDir(), "c.ign")
	os.WriteFile(cfg, []byte(`{"ignition":{"version":"3.6.0"},"storage":{"files":[{"path":"/etc/motd","contents":{"source":"data:,hi"}}]}}`), 0o644)
	plan := &stages.Plan{}
	rep, err := Run(context.Background(), Config{Mode: ModePlan, Root: root, Source: cfg, Plan: plan})
	if err != nil || rep.Result != ResultSuccess {
		t.Fatalf("Run(plan) = %+v, %v", rep, err)
	}
	if len(plan.Actions) == 0 {
		t.Errorf("plan has no actions, want the write of /etc/motd")
	}
	if ents, _ := os.ReadDir(root); len(ents) != 0 {
		t.Errorf("plan wrote into the root: %v", ents)
	}
}
