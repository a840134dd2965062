// Command tar_lister prints what Go's archive/tar (the reader a Fabric peer
// uses for a lifecycle package's code.tar.gz) sees in gzip-compressed tars.
//
//	tar_lister FILE...
//
// For each FILE it prints JSON lines: {"file": FILE}, then one object per
// header Next() returns (name, typeflag, mode, size, linkname, format, the
// raw bytes of name and linkname in hex since JSON cannot carry invalid
// UTF-8, and for entries with data the sha256 of the data Read returns),
// then {"error": "..."} if gzip.NewReader, Next or Read failed, else
// {"ok": true}. Entries are read the way a peer reads them: tar.NewReader,
// Next() until io.EOF, each entry's data read to its end. Exit status 0
// unless FILE cannot be opened or output fails.
package main

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
)

type entry struct {
	Name        string `json:"name"`
	NameHex     string `json:"name_hex"`
	Typeflag    int    `json:"typeflag"`
	Mode        int64  `json:"mode"`
	Size        int64  `json:"size"`
	Linkname    string `json:"linkname"`
	LinknameHex string `json:"linkname_hex"`
	Format      string `json:"format"`
	Sha256      string `json:"sha256,omitempty"`
	Read        int64  `json:"read"`
}

// headerOnly are the types whose data Go never reads (archive/tar's isHeaderOnlyType).
func headerOnly(flag byte) bool {
	switch flag {
	case tar.TypeLink, tar.TypeSymlink, tar.TypeChar, tar.TypeBlock, tar.TypeDir, tar.TypeFifo:
		return true
	}
	return false
}

func list(path string, out *json.Encoder) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := out.Encode(map[string]string{"file": path}); err != nil {
		return err
	}
	fail := func(err error) error {
		return out.Encode(map[string]string{"error": err.Error()})
	}
	zr, err := gzip.NewReader(bufio.NewReader(f))
	if err != nil {
		return fail(err)
	}
	tr := tar.NewReader(zr)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out.Encode(map[string]bool{"ok": true})
		}
		if err != nil {
			return fail(err)
		}
		e := entry{
			Name: hdr.Name, NameHex: hex.EncodeToString([]byte(hdr.Name)),
			Typeflag: int(hdr.Typeflag), Mode: hdr.Mode, Size: hdr.Size,
			Linkname: hdr.Linkname, LinknameHex: hex.EncodeToString([]byte(hdr.Linkname)),
			Format: hdr.Format.String(),
		}
		h := sha256.New()
		n, rerr := io.Copy(h, tr)
		e.Read = n
		if !headerOnly(hdr.Typeflag) && hdr.Typeflag != tar.TypeXGlobalHeader {
			e.Sha256 = hex.EncodeToString(h.Sum(nil))
		}
		if err := out.Encode(e); err != nil {
			return err
		}
		if rerr != nil {
			return fail(rerr)
		}
	}
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: tar_lister FILE...")
		os.Exit(2)
	}
	w := bufio.NewWriter(os.Stdout)
	out := json.NewEncoder(w)
	out.SetEscapeHTML(false)
	for _, path := range os.Args[1:] {
		if err := list(path, out); err != nil {
			fmt.Fprintf(os.Stderr, "tar_lister: %s: %v\n", path, err)
			w.Flush()
			os.Exit(1)
		}
	}
	if err := w.Flush(); err != nil {
		fmt.Fprintf(os.Stderr, "tar_lister: %v\n", err)
		os.Exit(1)
	}
}
