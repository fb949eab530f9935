package main

import (
	"bufio"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// residentCode tells which parts of a process's executable are resident:
// per ELF section and, for the sections holding symbols, per package. It
// reads the present bit of every page of the executable's mappings from
// /proc/PID/pagemap (readable for one's own processes without root).
func residentCode(pid int, binary string) (bySection, byPackage []resident, err error) {
	f, err := elf.Open(binary)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		return nil, nil, err
	}
	slices.SortFunc(syms, func(a, b elf.Symbol) int {
		switch {
		case a.Value < b.Value:
			return -1
		case a.Value > b.Value:
			return 1
		}
		return 0
	})
	pages, err := presentPages(pid, binary)
	if err != nil {
		return nil, nil, err
	}
	pageSize := uint64(os.Getpagesize())
	sections := map[string]int64{}
	packages := map[string]int64{}
	for _, page := range pages {
		sec := "other"
		for _, s := range f.Sections {
			if s.Addr != 0 && page >= s.Addr&^(pageSize-1) && page < s.Addr+s.Size {
				sec = s.Name
				break
			}
		}
		sections[sec] += int64(pageSize)
		if sec != ".text" && sec != ".rodata" && sec != ".noptrdata" && sec != ".data" {
			continue
		}
		// The symbol covering most of the page names its package.
		i := sort.Search(len(syms), func(i int) bool { return syms[i].Value > page })
		owner := map[string]uint64{}
		for j := max(i-1, 0); j < len(syms) && syms[j].Value < page+pageSize; j++ {
			s := syms[j]
			lo, hi := max(s.Value, page), min(s.Value+max(s.Size, 1), page+pageSize)
			if hi > lo {
				owner[packageOf(s.Name)] += hi - lo
			}
		}
		best, most := sec+" (no symbol)", uint64(0)
		for p, n := range owner {
			if n > most {
				best, most = p, n
			}
		}
		packages[best] += int64(pageSize)
	}
	return sortResident(sections), sortResident(packages), nil
}

type resident struct {
	name  string
	bytes int64
}

func sortResident(m map[string]int64) []resident {
	out := make([]resident, 0, len(m))
	for k, v := range m {
		out = append(out, resident{k, v})
	}
	slices.SortFunc(out, func(a, b resident) int { return int(b.bytes - a.bytes) })
	return out
}

// packageOf groups a Go symbol by module-ish prefix: the standard library
// by package, everything else by its first three path elements.
func packageOf(sym string) string {
	sym = strings.TrimPrefix(strings.TrimPrefix(sym, "type:"), "go:")
	slash := strings.LastIndex(sym, "/")
	dot := strings.Index(sym[slash+1:], ".")
	pkg := sym
	if dot >= 0 {
		pkg = sym[:slash+1+dot]
	}
	parts := strings.Split(pkg, "/")
	if strings.Contains(parts[0], ".") && len(parts) > 3 {
		pkg = strings.Join(parts[:3], "/")
		if parts[0] == "k8s.io" && len(parts) > 4 {
			pkg = strings.Join(parts[:4], "/")
		}
	}
	return pkg
}

// presentPages returns the virtual addresses of the executable's resident
// pages.
func presentPages(pid int, path string) ([]uint64, error) {
	maps, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return nil, err
	}
	defer maps.Close()
	pm, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", pid))
	if err != nil {
		return nil, err
	}
	defer pm.Close()
	pageSize := uint64(os.Getpagesize())
	var out []uint64
	sc := bufio.NewScanner(maps)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[5] != path {
			continue
		}
		lo, hi, _ := strings.Cut(fields[0], "-")
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("maps line %q", sc.Text())
		}
		n := (end - start) / pageSize
		buf := make([]byte, 8*n)
		if _, err := pm.ReadAt(buf, int64(start/pageSize*8)); err != nil && err != io.EOF {
			return nil, err
		}
		for i := uint64(0); i < n; i++ {
			if binary.LittleEndian.Uint64(buf[8*i:])&(1<<63) != 0 {
				out = append(out, start+i*pageSize)
			}
		}
	}
	return out, sc.Err()
}
