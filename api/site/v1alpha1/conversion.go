package v1alpha1

import (
	"encoding/json"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Annotations that keep, losslessly, what the other version has no field
// for. Each is written by one direction of the conversion and removed by
// the other, so a user never sees the one of the version they read.
const (
	// AnnotationV1alpha1Fields, on a stored (v1alpha2) object, holds as
	// JSON the v1alpha1 fields v1alpha2 has no field for: a unit's
	// spec.taints and setnode taints' timeAdded, a group's spec.workload and
	// status.workloadstatus.
	AnnotationV1alpha1Fields = "site.sitegrid.io/v1alpha1-fields"
	// AnnotationV1alpha2Fields, on an object read as v1alpha1, holds as JSON
	// the v1alpha2 fields v1alpha1 has no field for: status.conditions and
	// status.observedGeneration.
	AnnotationV1alpha2Fields = "site.sitegrid.io/v1alpha2-fields"
)

// v1alpha2Status is what v1alpha2's status has beyond v1alpha1's.
type v1alpha2Status struct {
	ObservedGeneration int64              `json:"observedGeneration,omitempty"`
	Conditions         []metav1.Condition `json:"conditions,omitempty"`
}

func (s v1alpha2Status) empty() bool { return s.ObservedGeneration == 0 && len(s.Conditions) == 0 }

// convertMeta copies src's metadata to dst, without the annotation the
// conversion reads (taken, decoded into into) and with the one it writes
// (keepKey holding keep, unless keepEmpty).
func convertMeta(src, dst *metav1.ObjectMeta, takeKey string, into any, keepKey string, keep any, keepEmpty bool) error {
	*dst = *src.DeepCopy()
	if raw, ok := dst.Annotations[takeKey]; ok {
		if err := json.Unmarshal([]byte(raw), into); err != nil {
			return fmt.Errorf("annotation %s of %s: %w", takeKey, src.Name, err)
		}
		delete(dst.Annotations, takeKey)
	}
	delete(dst.Annotations, keepKey)
	if !keepEmpty {
		data, err := json.Marshal(keep)
		if err != nil {
			return err
		}
		if dst.Annotations == nil {
			dst.Annotations = map[string]string{}
		}
		dst.Annotations[keepKey] = string(data)
	}
	if len(dst.Annotations) == 0 {
		dst.Annotations = nil
	}
	return nil
}
