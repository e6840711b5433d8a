package browsertest

import (
	"reflect"
	"strconv"
	"time"
)

// The admin page's steps and checks below are shared by its unit test
// (against a fake API) and its end-to-end test (through Caddy), which
// drive the same page.

// OpenGroup types the group id into the page's group box, clicks "Open"
// and waits until the JavaScript expression ready is true.
func (b *Browser) OpenGroup(id, ready string) {
	b.t.Helper()
	b.TypeInto("#group-id", id)
	b.Click("#open-group")
	b.WaitJS(ready)
}

// ExpectClearing checks the admin page while its "Clear all" call is in
// flight: the button is disabled, reads "Clearing…" and is marked busy and
// loading, and the group's other write buttons (save, add-row) are
// disabled too.
func (b *Browser) ExpectClearing() {
	b.t.Helper()
	var st struct {
		Disabled bool   `json:"disabled"`
		Text     string `json:"text"`
		Busy     string `json:"busy"`
		Loading  bool   `json:"loading"`
		Others   []bool `json:"others"`
	}
	b.Eval(`(() => { const b = document.getElementById('clear-all');
		return {disabled: b.disabled, text: b.textContent, busy: b.getAttribute('aria-busy') || '',
			loading: b.classList.contains('loading'),
			others: ['save', 'add-row'].map(id => document.getElementById(id).disabled)}; })()`, &st)
	if !st.Disabled || st.Text != "Clearing…" || st.Busy != "true" || !st.Loading {
		b.t.Errorf("during the call: button %+v, want disabled, \"Clearing…\", aria-busy, .loading", st)
	}
	if !reflect.DeepEqual(st.Others, []bool{true, true}) {
		b.t.Errorf("save, add-row disabled = %v during the clear, want both true", st.Others)
	}
}

// ExpectClearAllIgnored waits half a second, clicks "Clear all" again and
// checks that the button is still disabled: the call it started must
// still be in flight, so that this click is ignored.
func (b *Browser) ExpectClearAllIgnored() {
	b.t.Helper()
	time.Sleep(500 * time.Millisecond)
	b.Click("#clear-all")
	var disabled bool
	b.Eval(`document.getElementById('clear-all').disabled`, &disabled)
	if !disabled {
		b.t.Errorf("button enabled again before the DELETE answered")
	}
}

// ExpectCleared waits for the admin page to report n overrides cleared and
// checks that "Clear all" is enabled again and no override row is left.
func (b *Browser) ExpectCleared(n int) {
	b.t.Helper()
	b.WaitJS(`document.getElementById('message').textContent.includes('Cleared ` + strconv.Itoa(n) + ` overrides')`)
	b.WaitJS(`!document.getElementById('clear-all').disabled`)
	b.ExpectText("#clear-all", "Clear all")
	var rows int
	b.Eval(`document.querySelectorAll('#overrides tr').length`, &rows)
	if rows != 0 {
		b.t.Errorf("%d override rows on the page after clear, want 0", rows)
	}
}
