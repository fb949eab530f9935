package v1alpha2

// Condition types and reasons of NodeUnit.
const (
	// UnitReady is True when the unit has members and all are Ready.
	UnitReady = "Ready"

	// ReasonAllNodesReady: every member node is Ready.
	ReasonAllNodesReady = "AllNodesReady"
	// ReasonNodesNotReady: some member nodes are not Ready; the message names them.
	ReasonNodesNotReady = "NodesNotReady"
	// ReasonNoNodes: no node matches the unit.
	ReasonNoNodes = "NoNodes"
	// ReasonBadSelector: the unit's selector cannot be parsed.
	ReasonBadSelector = "InvalidSelector"

	// UnitSetNodeValid is False when the apiserver would refuse what the
	// unit's setNode puts on nodes; the unit's setNode is then put on no
	// node, and every other unit's still is.
	UnitSetNodeValid = "SetNodeValid"
	// ReasonSetNodeValid: every node can carry the unit's setNode.
	ReasonSetNodeValid = "Valid"
	// ReasonInvalidSetNode: the message lists what a Node cannot carry
	// (also the reason of the Warning Event on the unit).
	ReasonInvalidSetNode = "InvalidSetNode"
)

// Condition types and reasons of NodeGroup.
const (
	// GroupConflict is True while a node is claimed by two or more units of
	// the group; the node keeps its current group label meanwhile.
	GroupConflict = "Conflict"
	// GroupAutoUnits is False when a unit autoFindNodeKeys needs cannot be
	// made, for example because a unit of that name belongs to someone else.
	GroupAutoUnits = "AutoUnitsReady"

	// ReasonNodesClaimedTwice: a node is claimed by two units of the group
	// (also the reason of the Warning Event per node).
	ReasonNodesClaimedTwice = "NodesClaimedTwice"
	// ReasonNoConflict: every node belongs to at most one unit of the group.
	ReasonNoConflict = "NoConflict"
	// ReasonUnitsInPlace: every unit autoFindNodeKeys needs exists.
	ReasonUnitsInPlace = "UnitsInPlace"
	// ReasonNameTaken: a unit autoFindNodeKeys needs is taken by a unit that
	// is not the group's.
	ReasonNameTaken = "UnitNameTaken"
)

// ReasonFieldHeldByOthers is the Event reason, on a unit, for fields it
// asked for on a node that someone else holds with another value.
const ReasonFieldHeldByOthers = "FieldHeldByOthers"

// ReasonNodeApplyRefused is the Event reason, on each unit of a node, for a
// node write the apiserver refused; the message has the apiserver's reason.
const ReasonNodeApplyRefused = "NodeApplyRefused"
