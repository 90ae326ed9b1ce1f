package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/parley-dev/parley/libs/localinfra/mailcatcher"
	"github.com/spf13/cobra"
)

// defaultMailDir is where `make run`'s SMTP catcher stores mail.
func defaultMailDir() string {
	if d := os.Getenv("PARLEY_MAIL_DIR"); d != "" {
		return d
	}
	stack := os.Getenv("PARLEY_STACK_DIR")
	if stack == "" {
		stack = ".parley"
	}
	return filepath.Join(stack, "mail")
}

func (a *app) mail() *cobra.Command {
	cmd := &cobra.Command{Use: "mail", Short: "Read the mail the local stack's SMTP catcher received"}
	var dir string
	cmd.PersistentFlags().StringVar(&dir, "dir", defaultMailDir(), "directory of caught mail (env PARLEY_MAIL_DIR; default $PARLEY_STACK_DIR/mail, else .parley/mail)")
	var limit int
	list := &cobra.Command{
		Use:   "list",
		Short: "List caught messages, oldest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			msgs, err := (&mailcatcher.Store{Dir: dir}).List()
			if err != nil {
				return err
			}
			if limit > 0 && len(msgs) > limit {
				msgs = msgs[len(msgs)-limit:]
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tTIME\tFROM\tTO\tSUBJECT")
			for _, m := range msgs {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", shortID(m.ID), m.Received.Local().Format(time.DateTime),
					orDash(cell(m.Header("From"))), orDash(cell(strings.Join(m.Envelope.To, ", "))), orDash(cell(m.Header("Subject"))))
			}
			if err := w.Flush(); err != nil {
				return err
			}
			if len(msgs) == 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "no mail in %s\n", dir)
			}
			return nil
		},
	}
	list.Flags().IntVar(&limit, "limit", 50, "show only the newest this many (0: all)")
	var raw, html bool
	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show one message: its headers and text part (ID from list, or any unique part of it)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := (&mailcatcher.Store{Dir: dir}).Load(args[0])
			if errors.Is(err, mailcatcher.ErrNotFound) {
				return fmt.Errorf("no message %q in %s (see parleyctl mail list)", args[0], dir)
			}
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if raw {
				_, err := out.Write(m.Raw)
				return err
			}
			fmt.Fprintf(out, "Id: %s\nReceived: %s\nEnvelope-From: %s\nEnvelope-To: %s\nTLS: %t\n", m.ID,
				m.Received.Local().Format(time.RFC3339), orDash(m.Envelope.From), strings.Join(m.Envelope.To, ", "), m.Envelope.TLS)
			for _, h := range m.Headers {
				fmt.Fprintf(out, "%s: %s\n", h.Name, cell(h.Value))
			}
			body := m.Text
			if html {
				body = m.HTML
			}
			if m.ParseError != "" {
				body = "(unreadable message: " + m.ParseError + "; see --raw)"
			}
			fmt.Fprintf(out, "\n%s\n", printable(strings.TrimRight(body, "\n")))
			return nil
		},
	}
	show.Flags().BoolVar(&raw, "raw", false, "print the message exactly as received")
	show.Flags().BoolVar(&html, "html", false, "print the HTML part instead of the text part")
	cmd.AddCommand(list, show)
	return cmd
}

// shortID is the random part of an id, enough for show.
func shortID(id string) string {
	if _, s, ok := strings.Cut(id, "-"); ok {
		return s
	}
	return id
}

// cell keeps a header value on one line, without terminal control
// characters, for a table.
func cell(s string) string {
	return strings.Join(strings.FieldsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) }), " ")
}

// printable drops control characters but newlines and tabs, so a caught
// message cannot drive the terminal.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r != '\n' && r != '\t' && (r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0)) {
			return -1
		}
		return r
	}, s)
}
