package v1

import (
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Labels and annotations on the children of a grid.
const (
	// LabelGridSelector names the grid a child belongs to (SuperEdge's key).
	LabelGridSelector = "superedge.io/grid-selector"
	// LabelGridUniqKey is the grid's gridUniqKey (SuperEdge's key).
	LabelGridUniqKey = "superedge.io/grid-uniq-key"
	// LabelGridUnit is the unit value a child serves; it is also on the
	// child's pods and in its selector, so the copies of different units
	// never select each other's pods.
	LabelGridUnit = "superedge.io/grid-unit"
	// AnnotationTemplateHash is the hash of the child's desired state; the
	// controller writes a child only when it changes.
	AnnotationTemplateHash = "superedge.io/grid-template-hash"
	// AnnotationUpdatedAt is when the controller last changed the child's
	// template, the start of its progress deadline.
	AnnotationUpdatedAt = "superedge.io/grid-updated-at"
	// AnnotationUnitGoneSince is when the last node with the child's unit
	// value went away; the child is deleted after the grace period.
	AnnotationUnitGoneSince = "superedge.io/grid-unit-gone-since"
	// AnnotationGridUniqKey holds the grid's gridUniqKey on a child when the
	// key is not a valid label value (it has a prefix, such as
	// sitegrid.io/site), so LabelGridUniqKey cannot.
	AnnotationGridUniqKey = "superedge.io/grid-uniq-key"
	// AnnotationTopologyKeys is the Service annotation the edge hub reads to
	// keep traffic inside a unit (SuperEdge's key), a JSON array of keys.
	AnnotationTopologyKeys = "topologyKeys"
	// UnitPlaceholder in override patches is replaced by the unit value.
	UnitPlaceholder = "${unit}"
)

// Condition types and reasons of grids.
const (
	// ConditionAvailable is True when every unit's copy is Available.
	ConditionAvailable = "Available"
	// ConditionRolloutProgressing is True while a staged rollout is updating
	// units, False when it is complete, paused or halted.
	ConditionRolloutProgressing = "RolloutProgressing"
	// ConditionConflict is True while a child's name is taken by an object
	// the grid does not own (NameTaken), or two unit values would share one
	// child (NameClash); the message names the values.
	ConditionConflict = "Conflict"
	// ConditionValid is False when the spec cannot be turned into some
	// unit's child: an override that does not apply (InvalidOverride), one
	// that changes what pins the copy to its unit (PinningOverride), a
	// template that cannot be used (InvalidTemplate), or a child the
	// apiserver refuses (ChildRefused). The message names the units.
	ConditionValid = "Valid"
	// ConditionSynced is False when the last pass of the controller failed
	// at a step (ReconcileError, the message says which and why); True
	// (ReconcileSuccess) after a pass that did every step.
	ConditionSynced = "Synced"

	ReasonAllUnitsAvailable = "AllUnitsAvailable"
	ReasonUnitsUnavailable  = "UnitsUnavailable"
	ReasonNoUnits           = "NoUnits"
	ReasonRolloutComplete   = "RolloutComplete"
	ReasonRollingOut        = "RollingOut"
	ReasonRolloutPaused     = "RolloutPaused"
	ReasonRolloutHalted     = "ProgressDeadlineExceeded"
	ReasonNameTaken         = "NameTaken"
	ReasonNoConflict        = "NoConflict"
	ReasonNameClash         = "NameClash"
	ReasonInvalidOverride   = "InvalidOverride"
	ReasonPinningOverride   = "PinningOverride"
	ReasonInvalidTemplate   = "InvalidTemplate"
	ReasonChildRefused      = "ChildRefused"
	ReasonValid             = "Valid"
	ReasonReconcileSuccess  = "ReconcileSuccess"
	ReasonReconcileError    = "ReconcileError"
)

// Override changes the copy of some units. Overrides apply in list order,
// after the template is chosen (templatePool and templates); within one
// override, the fields apply in the order they are listed here, patches last.
// +kubebuilder:validation:XValidation:rule="(has(self.units) && size(self.units) > 0) || has(self.unitSelector)",message="an override must select units by value (units) or by NodeUnit labels (unitSelector)"
type Override struct {
	// name says what the override is for; it appears in conditions.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name,omitempty"`

	// units are unit values (values of the gridUniqKey node label).
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=1000
	// +kubebuilder:validation:items:MaxLength=63
	Units []string `json:"units,omitempty"`

	// unitSelector selects units by the labels of the NodeUnit named by the
	// unit value (when gridUniqKey is a NodeGroup, unit values are NodeUnit
	// names).
	// +optional
	UnitSelector *metav1.LabelSelector `json:"unitSelector,omitempty"`

	// replicas of the copy.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Replicas *int32 `json:"replicas,omitempty"`

	// images sets the image of named containers (init containers too).
	// +optional
	// +listType=map
	// +listMapKey=container
	// +kubebuilder:validation:MaxItems=32
	Images []ContainerImage `json:"images,omitempty"`

	// env sets environment variables of named containers, or of every
	// container when container is empty; a variable of the same name is
	// replaced.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	Env []ContainerEnv `json:"env,omitempty"`

	// resources replaces the resources of named containers.
	// +optional
	// +listType=map
	// +listMapKey=container
	// +kubebuilder:validation:MaxItems=32
	Resources []ContainerResources `json:"resources,omitempty"`

	// nodeSelector entries are added to the pods' node selector.
	// +optional
	// +kubebuilder:validation:MaxProperties=32
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`

	// tolerations are added to the pods' tolerations.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`

	// patches are RFC 6902 JSON patch operations on the child's spec (the
	// DeploymentSpec or StatefulSetSpec), applied last. In every string
	// value, ${unit} is replaced by the unit value.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	Patches []JSONPatch `json:"patches,omitempty"`
}

// ContainerImage sets one container's image.
type ContainerImage struct {
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Container string `json:"container"`
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	Image string `json:"image"`
}

// ContainerEnv sets environment variables of a container.
type ContainerEnv struct {
	// container name; empty means every container.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	Container string `json:"container,omitempty"`
	// +required
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	Env []corev1.EnvVar `json:"env"`
}

// ContainerResources sets one container's resources.
type ContainerResources struct {
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Container string `json:"container"`
	// +required
	Resources corev1.ResourceRequirements `json:"resources"`
}

// JSONPatch is one RFC 6902 operation.
// +kubebuilder:validation:XValidation:rule="self.op in ['move', 'copy'] ? has(self.from) : true",message="move and copy operations need from"
type JSONPatch struct {
	// +required
	// +kubebuilder:validation:Enum=add;remove;replace;move;copy;test
	Op string `json:"op"`
	// path is a JSON pointer into the child's spec, such as
	// /template/spec/volumes/0/configMap/name. It may not be nodeName: that
	// would take the copy out of its unit.
	// +required
	// +kubebuilder:validation:XValidation:rule="!self.startsWith('/template/spec/nodeName')",message="a patch must not set nodeName: that would take the copy out of its unit"
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:Pattern=`^(/([^/~]|~[01])*)*$`
	Path string `json:"path"`
	// from is the source pointer of move and copy.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:Pattern=`^(/([^/~]|~[01])*)*$`
	From string `json:"from,omitempty"`
	// value of add, replace and test (a missing value is reported in the
	// grid's Valid condition).
	// +optional
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:pruning:PreserveUnknownFields
	Value *apiextensionsv1.JSON `json:"value,omitempty"`
}

// RolloutStrategy stages a template change across units.
type RolloutStrategy struct {
	// maxUnavailableUnits is how many units may be updating at once: a
	// number, or a percentage of the units (rounded down, at least 1).
	// Default 1.
	// +optional
	// +kubebuilder:validation:XIntOrString
	MaxUnavailableUnits *intstr.IntOrString `json:"maxUnavailableUnits,omitempty"`
	// paused stops starting new unit updates; updates already started go on.
	// +optional
	Paused bool `json:"paused,omitempty"`
	// progressDeadlineSeconds is how long an updated unit may take to become
	// Available before the rollout halts. Default 600.
	// +optional
	// +kubebuilder:validation:Minimum=1
	ProgressDeadlineSeconds *int32 `json:"progressDeadlineSeconds,omitempty"`
}

// GridUnitCounts are the unit totals shown by kubectl.
type GridUnitCounts struct {
	// units is the number of unit values with a copy.
	// +optional
	Units int32 `json:"units,omitempty"`
	// readyUnits is the number of units whose copy is Available.
	// +optional
	ReadyUnits int32 `json:"readyUnits,omitempty"`
	// updatedUnits is the number of units running the current template.
	// +optional
	UpdatedUnits int32 `json:"updatedUnits,omitempty"`
}
