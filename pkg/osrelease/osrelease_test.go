package osrelease

import (
	"reflect"
	"testing"
)

func TestParse(t *testing.T) {
	got := Parse("# c\nID=abboot-demo\nVERSION_ID=\"2\"\nNAME='abboot demo'\nbroken\nEMPTY=\n")
	want := map[string]string{"ID": "abboot-demo", "VERSION_ID": "2", "NAME": "abboot demo", "EMPTY": ""}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Parse = %v, want %v", got, want)
	}
	if m := Read("/nonexistent"); len(m) != 0 {
		t.Errorf("Read(missing) = %v", m)
	}
}
