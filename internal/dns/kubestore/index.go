package kubestore

import (
	"maps"
	"slices"

	"github.com/coredns/coredns/plugin/kubernetes/object"
)

// The maps' upkeep, s.mu held. put replaces the object of the same key;
// each says whether the zone's records and its external records changed,
// by the rules of CoreDNS's own store (controller.go: serviceModified,
// endpointsEquivalent).

func (s *Store) putService(svc *object.Service) (internal, external bool) {
	old := s.services[svc.Index]
	switch {
	case old == nil:
		internal, external = true, len(svc.ExternalIPs) > 0
	case old.Version == svc.Version:
		return false, false
	default:
		internal, external = serviceModified(old, svc)
		s.unindexService(old)
	}
	s.services[svc.Index] = svc
	for _, ip := range svc.ClusterIPs {
		s.svcByIP.add(ip, svc)
	}
	for _, ip := range svc.ExternalIPs {
		s.svcByExtIP.add(ip, svc)
	}
	return internal, external
}

func (s *Store) dropService(key string) (internal, external bool) {
	old := s.services[key]
	if old == nil {
		return false, false
	}
	s.unindexService(old)
	delete(s.services, key)
	return true, len(old.ExternalIPs) > 0
}

func (s *Store) unindexService(svc *object.Service) {
	for _, ip := range svc.ClusterIPs {
		s.svcByIP.remove(ip, svc)
	}
	for _, ip := range svc.ExternalIPs {
		s.svcByExtIP.remove(ip, svc)
	}
}

func (s *Store) putSlice(ep *object.Endpoints) (internal, external bool) {
	key := sliceKey(ep)
	old := s.slices[key]
	switch {
	case old == nil:
		internal = true
	case old.Version == ep.Version:
		return false, false
	default:
		internal = !endpointsEquivalent(old, ep)
		s.unindexSlice(old)
	}
	s.slices[key] = ep
	s.epByService.add(ep.Index, ep)
	for _, ip := range ep.IndexIP {
		s.epByIP.add(ip, ep)
	}
	return internal, false
}

func (s *Store) dropSlice(key string) (internal, external bool) {
	old := s.slices[key]
	if old == nil {
		return false, false
	}
	s.unindexSlice(old)
	delete(s.slices, key)
	return true, false
}

func (s *Store) unindexSlice(ep *object.Endpoints) {
	s.epByService.remove(ep.Index, ep)
	for _, ip := range ep.IndexIP {
		s.epByIP.remove(ip, ep)
	}
}

// Namespaces change no records: a name's namespace is only asked whether
// it exists.
func (s *Store) putNamespace(ns *object.Namespace) (internal, external bool) {
	s.namespaces[ns.Name] = ns
	return false, false
}

func (s *Store) dropNamespace(key string) (internal, external bool) {
	delete(s.namespaces, key)
	return false, false
}

// serviceModified: a new external name or new ports change the records;
// new external IPs or ports change the external ones.
func serviceModified(old, svc *object.Service) (internal, external bool) {
	external = !slices.Equal(old.ExternalIPs, svc.ExternalIPs)
	internal = old.ExternalName != svc.ExternalName
	if len(old.Ports) != len(svc.Ports) {
		return true, true
	}
	for i := range old.Ports {
		a, b := old.Ports[i], svc.Ports[i]
		if a.Name != b.Name || a.Port != b.Port || a.Protocol != b.Protocol {
			return true, true
		}
	}
	return internal, external
}

// endpointsEquivalent: the same ready addresses and host names, the same
// ports, and the same zones.
func endpointsEquivalent(a, b *object.Endpoints) bool {
	if len(a.Subsets) != len(b.Subsets) || !maps.Equal(a.Zones, b.Zones) {
		return false
	}
	for i := range a.Subsets {
		sa, sb := a.Subsets[i], b.Subsets[i]
		if len(sa.Addresses) != len(sb.Addresses) || len(sa.Ports) != len(sb.Ports) {
			return false
		}
		for j := range sa.Addresses {
			if sa.Addresses[j].IP != sb.Addresses[j].IP || sa.Addresses[j].Hostname != sb.Addresses[j].Hostname {
				return false
			}
		}
		for j := range sa.Ports {
			if sa.Ports[j] != sb.Ports[j] {
				return false
			}
		}
	}
	return true
}
