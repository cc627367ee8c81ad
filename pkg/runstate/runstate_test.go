package runstate

import (
	"os"
	"path/filepath"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	Path = filepath.Join(t.TempDir(), "run", "state.json")
	if _, err := Read(); err == nil {
		t.Fatal("Read before Write succeeded")
	}
	want := State{Slot: "b", How: "handover", Version: "2", ESP: "/dev/vda1", Disk: "/dev/vda"}
	if err := Write(want); err != nil {
		t.Fatal(err)
	}
	got, err := Read()
	if err != nil || got != want {
		t.Errorf("Read = %+v, %v; want %+v", got, err, want)
	}
	os.WriteFile(Path, []byte("{"), 0o644)
	if _, err := Read(); err == nil {
		t.Error("Read of a corrupt record succeeded")
	}
}
