package observe

import "testing"

func TestHubDeliversByKind(t *testing.T) {
	var hub Hub
	if hub.Wants(Console) {
		t.Fatal("an empty hub wants events")
	}
	var got []Kind
	remove := hub.Add(HookFunc{Kinds: RPC | EfuseBurn, F: func(e Event) { got = append(got, e.Kind) }})
	if !hub.Wants(RPC) || hub.Wants(Console) {
		t.Fatal("Wants does not follow the hooks")
	}
	hub.Emit(Event{Kind: Console, Line: "x"})
	hub.Emit(Event{Kind: RPC, Call: &Call{Method: "Sys.GetInfo"}})
	hub.Emit(Event{Kind: EfuseBurn})
	if len(got) != 2 || got[0] != RPC || got[1] != EfuseBurn {
		t.Fatalf("delivered %v", got)
	}
	remove()
	hub.Emit(Event{Kind: RPC})
	if len(got) != 2 || hub.Wants(RPC) {
		t.Fatal("a removed hook still receives events")
	}
	var nilHub *Hub
	nilHub.Emit(Event{Kind: RPC}) // a device without observers
}

func TestCallAuth(t *testing.T) {
	tests := []struct {
		c    Call
		want string
	}{
		{Call{}, "anonymous"},
		{Call{User: "joe"}, "user joe"},
		{Call{Code: 401}, "401"},
		{Call{Code: 403, User: "mallory"}, "403"},
		{Call{Code: 404, User: "joe"}, "user joe"},
		{Call{Dropped: true}, "dropped"},
	}
	for _, tt := range tests {
		if got := tt.c.Auth(); got != tt.want {
			t.Errorf("%+v: %q, want %q", tt.c, got, tt.want)
		}
	}
}
