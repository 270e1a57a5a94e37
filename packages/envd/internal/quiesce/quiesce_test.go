package quiesce_test

import (
	"errors"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"fast-sandbox.io/envd/internal/quiesce"
)

// The test process plays the daemon: it records its own pid and answers the signals the way the
// daemon does, by recording the new state.
func TestControlSignalsTheRecordedDaemonAndWaitsForItsNewState(t *testing.T) {
	dir := t.TempDir()
	recorder := quiesce.Recorder{Dir: dir}
	if err := recorder.RecordPid(); err != nil {
		t.Fatal(err)
	}
	if err := recorder.RecordState(quiesce.Serving); err != nil {
		t.Fatal(err)
	}
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, quiesce.QuiesceSignal, quiesce.ResumeSignal)
	defer signal.Stop(signals)
	go func() {
		for received := range signals {
			state := quiesce.Serving
			if received == quiesce.QuiesceSignal {
				state = quiesce.Quiesced
			}
			_ = recorder.RecordState(state)
		}
	}()
	if err := quiesce.Control(dir, "quiesce", 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if text, _ := os.ReadFile(filepath.Join(dir, quiesce.StateFile)); strings.TrimSpace(string(text)) != quiesce.Quiesced {
		t.Fatalf("state %q after quiesce", text)
	}
	if err := quiesce.Control(dir, "resume", 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if text, _ := os.ReadFile(filepath.Join(dir, quiesce.StateFile)); strings.TrimSpace(string(text)) != quiesce.Serving {
		t.Fatalf("state %q after resume", text)
	}
}

func TestControlSaysWhatIsWrong(t *testing.T) {
	dir := t.TempDir()
	if err := quiesce.Control(dir, "pause", time.Second); err == nil || !strings.Contains(err.Error(), "use quiesce or resume") {
		t.Fatalf("unknown action: %v", err)
	}
	if err := quiesce.Control(dir, "quiesce", time.Second); err == nil || !strings.Contains(err.Error(), "no daemon recorded") {
		t.Fatalf("no pid file: %v", err)
	}
}

func TestAZeroRecorderRecordsNothing(t *testing.T) {
	if err := (quiesce.Recorder{}).RecordPid(); err != nil {
		t.Fatal(err)
	}
	if dir := quiesce.StateDirIfPresent(filepath.Join(t.TempDir(), "missing")); dir != "" {
		t.Fatalf("StateDirIfPresent of a missing directory: %q", dir)
	}
}

func TestHostnameWatchSeesANewName(t *testing.T) {
	name := "source"
	watch := quiesce.NewHostnameWatch(func() (string, error) { return name, nil })
	if watch.Changed() {
		t.Fatal("Changed() before the hostname changed")
	}
	name = "copy-a"
	if !watch.Changed() {
		t.Fatal("Changed() missed the new hostname")
	}
}

func TestHostnameWatchIgnoresFailedReads(t *testing.T) {
	failing := errors.New("no hostname")
	calls := 0
	watch := quiesce.NewHostnameWatch(func() (string, error) {
		calls++
		if calls == 1 {
			return "source", nil
		}
		return "", failing
	})
	if watch.Changed() {
		t.Fatal("a failed read counted as a new hostname")
	}
	unknown := quiesce.NewHostnameWatch(func() (string, error) { return "", failing })
	if unknown.Changed() {
		t.Fatal("a watch that never read a hostname reported a change")
	}
}

func TestRecordResumeWatch(t *testing.T) {
	dir := t.TempDir()
	if err := (quiesce.Recorder{Dir: dir}).RecordResumeWatch("hostname"); err != nil {
		t.Fatal(err)
	}
	text, err := os.ReadFile(filepath.Join(dir, quiesce.ResumeWatchFile))
	if err != nil || string(text) != "hostname\n" {
		t.Fatalf("%s = %q, %v", quiesce.ResumeWatchFile, text, err)
	}
	if err := (quiesce.Recorder{}).RecordResumeWatch("hostname"); err != nil {
		t.Fatalf("a recorder without a directory failed: %v", err)
	}
}
