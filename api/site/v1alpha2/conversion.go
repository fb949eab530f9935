package v1alpha2

// v1alpha2 is the hub of the group's versions: the stored one, which every
// other version converts to and from (api/site/v1alpha1).

// Hub marks NodeUnit as the conversion hub.
func (*NodeUnit) Hub() {}

// Hub marks NodeGroup as the conversion hub.
func (*NodeGroup) Hub() {}
