package fleet

import (
	"context"
	"crypto/ed25519"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/abboot/abboot/pkg/bundle"
)

func testKey(t testing.TB, seed byte) ed25519.PrivateKey {
	t.Helper()
	return ed25519.NewKeyFromSeed([]byte(strings.Repeat(string(rune('a'+seed)), ed25519.SeedSize)))
}

func TestChannel(t *testing.T) {
	key, other := testKey(t, 0), testKey(t, 1)
	keys := bundle.Keyring{key.Public().(ed25519.PublicKey)}
	d := Desired{Version: "2.1", URL: "https://updates.example/os.bundle?arch=x86-64&v=2.1"}
	good, err := SignChannel(d, key)
	if err != nil {
		t.Fatal(err)
	}
	byOther, err := SignChannel(d, other)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		file    string
		want    Desired
		wantErr string
	}{
		{name: "good", file: string(good), want: d},
		{name: "other key", file: string(byOther), wantErr: "bad channel signature"},
		{name: "version changed", file: strings.Replace(string(good), `"2.1"`, `"2.2"`, 1), wantErr: "bad channel signature"},
		{name: "url changed", file: strings.Replace(string(good), "arch=x86-64", "arch=arm64", 1), wantErr: "bad channel signature"},
		{name: "no signature", file: `{"version":"2.1","url":"https://x"}`, wantErr: "bad channel signature"},
		{name: "bad version", file: `{"version":"2.x","url":"https://x","signature":""}`, wantErr: "not dot-separated"},
		{name: "line break in url", file: `{"version":"2","url":"https://x\nurl=y","signature":""}`, wantErr: "line break"},
		{name: "not json", file: `version=2`, wantErr: "parsing the channel file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseChannel([]byte(tc.file), keys)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseChannel = %+v, %v; want an error containing %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseChannel = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestChannelFetch(t *testing.T) {
	key := testKey(t, 0)
	d := Desired{Version: "3", URL: "https://updates.example/3.bundle"}
	file, err := SignChannel(d, key)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/stable.json":
			w.Write(file)
		case "/huge.json":
			w.Write([]byte(strings.Repeat(" ", maxChannelSize+1)))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	keys := bundle.Keyring{key.Public().(ed25519.PublicKey)}
	c := &Channel{URL: srv.URL + "/stable.json", Keys: keys, Client: srv.Client()}
	if got, err := c.Fetch(context.Background()); err != nil || got != d {
		t.Fatalf("Fetch = %+v, %v; want %+v", got, err, d)
	}
	for path, want := range map[string]string{"/missing.json": "404", "/huge.json": "larger than"} {
		c := &Channel{URL: srv.URL + path, Keys: keys, Client: srv.Client()}
		if got, err := c.Fetch(context.Background()); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Fetch %s = %+v, %v; want an error containing %q", path, got, err, want)
		}
	}
	c = &Channel{URL: srv.URL + "/stable.json", Keys: bundle.Keyring{testKey(t, 2).Public().(ed25519.PublicKey)}, Client: srv.Client()}
	if _, err := c.Fetch(context.Background()); !errors.Is(err, ErrBadChannelSignature) {
		t.Errorf("Fetch with an untrusted key: %v, want ErrBadChannelSignature", err)
	}
}

// FuzzParseChannel: no input panics, and whatever parses was signed by the
// trusted key for exactly what it announces.
func FuzzParseChannel(f *testing.F) {
	key := testKey(f, 0)
	good, err := SignChannel(Desired{Version: "1.2", URL: "https://u/1.2"}, key)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"version":"1","url":"x","signature":"AAAA"}`))
	f.Add([]byte(`{}`))
	keys := bundle.Keyring{key.Public().(ed25519.PublicKey)}
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := ParseChannel(data, keys)
		if err != nil {
			return
		}
		if _, err := channelMessage(d); err != nil {
			t.Fatalf("parsed %+v, which cannot be signed: %v", d, err)
		}
		resigned, err := SignChannel(d, key)
		if err != nil {
			t.Fatal(err)
		}
		if again, err := ParseChannel(resigned, keys); err != nil || again != d {
			t.Fatalf("re-signed %+v parses as %+v, %v", d, again, err)
		}
	})
}
