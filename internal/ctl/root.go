// Package ctl is sitegridctl's command line.
package ctl

import (
	"github.com/spf13/cobra"
)

// NewRootCommand returns the sitegridctl command tree.
func NewRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "sitegridctl",
		Short:         "Operate sitegrid: edge sites, service groups and the local lab",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newLabCommand(), newSiteCommand(), newGridCommand(), newNodeCommand())
	return root
}
