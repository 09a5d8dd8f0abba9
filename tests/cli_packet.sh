# SPDX-License-Identifier: MIT
# pkmcom send --packet NAME FIELD=VALUE...: the Complete Definition's packets built by field names
# (the same bytes as the equivalent TYPE:VALUE fields), enum and bitflag names, arrays and their
# counts, usage errors naming the field, and a live round trip that serve --print decodes by name.
source "$(dirname "$0")/support/cli.sh"

NIL=00000000-0000-0000-0000-000000000000

# same NAME ARGS_A -- ARGS_B: `send --dry-run` prints the same line for both argument lists.
same() {
    local name=$1 a=() b=()
    shift
    while [ "$1" != "--" ]; do a+=("$1"); shift; done
    shift
    b=("$@")
    run "$name.a" send --dry-run "${a[@]}"
    expect_rc "$name.a" 0
    run "$name.b" send --dry-run "${b[@]}"
    expect_rc "$name.b" 0
    [ -s "$T/$name.a.out" ] || fail "$name: no output"
    cmp -s "$T/$name.a.out" "$T/$name.b.out" ||
        fail "$name: --packet gave $(cat "$T/$name.a.out"), TYPE:VALUE gave $(cat "$T/$name.b.out")"
    ok
}

# ---- the same bytes and Hash as the TYPE:VALUE fields of the spec's schema ----
same connreq --packet connect-request PkmVersion=1.0 'TrainerInfo={"name":"Red"}' \
    SentryAccount=$NIL -- --id 0 version:1.0 'json:{"name":"Red"}' uuid:$NIL
# Names: the spec's heading or any spelling of it; fields in any order.
same connreq_names --packet 'Connect Request' "SentryAccount=$NIL" 'trainer_info={"name":"Red"}' \
    pkmversion=1.0 -- --packet CONNECT-REQUEST PkmVersion=1.0 'TrainerInfo={"name":"Red"}' \
    SentryAccount=$NIL
# An enum by its value's name, or by number.
same reason_name --packet reestablish-secret Reason=password -- --id 5 byte:1
same reason_num --packet 'Re-establish Secret' Reason=1 -- --id 5 byte:1
same reason_side --packet reestablishsecret 'Reason=side secret 8' -- --id 5 byte:8
# A bitflag by bit names joined by |, numbers, or both; the end of a field's name is enough.
same actions --packet connect-success 'ServerInfo={}' 'Actions=trade|irc' -- --id 1 'json:{}' uint:5
same actions_mixed --packet connect-success 'ServerInfo={}' 'AvailableActions=0x8|Battle' \
    -- --id 1 'json:{}' uint:10
same actions_none --packet connect-success 'Server Info={}' 'Available Actions=0' \
    -- --id 1 'json:{}' uint:0
# Every field type of 0x07 (Long, Instant, Unsigned Short, Byte Enum, Int), signed values too.
same keepalive --packet keep-alive-serverbound KeepAliveId=-5 EncodingTime=10,5 \
    ServerPacketsRecieved=3 LastPacketId=0xFE LastPacketHashcode=-1 \
    -- --id 7 long:-5 instant:10,5 ushort:3 byte:0xFE int:-1
same challenge --packet challenge-response 'Session Key=abc' 'Authorization=xyz' \
    -- --id 4 string:abc string:xyz

# An array: once per element, its count filled in (or checked). The content is the Reason, the
# count, then the elements (the APL has no length of its own for an array counted by a field).
run fail2 send --dry-run --packet connect-failure 'Reason={"a":1}' 'Args={"x":1}' 'Args={"y":2}'
expect_rc fail2 0
grep -qF '"id":2,' "$T/fail2.out" && grep -qF '"content":"00077b2261223a317d0200077b2278223a317d00077b2279223a327d"' "$T/fail2.out" ||
    fail "connect-failure: $(cat "$T/fail2.out")"
ok
run fail2n send --dry-run --packet connect-failure 'Reason={"a":1}' NumArgs=2 'Args={"x":1}' 'Args={"y":2}'
expect_rc fail2n 0
cmp -s "$T/fail2.out" "$T/fail2n.out" || fail "Num. Args given: $(cat "$T/fail2n.out")"
ok
run fail0 send --dry-run --packet connect-failure 'Reason={"a":1}'
expect_rc fail0 0
grep -qF '"content":"00077b2261223a317d00"' "$T/fail0.out" || fail "no Args: $(cat "$T/fail0.out")"
ok

# ---- usage errors: status 2, one line, naming the packet or field ----
bad() {
    local name=$1 want=$2
    shift 2
    run "$name" send --dry-run "$@"
    expect_rc "$name" 2
    expect_one_error "$name" "$want"
}
bad unknown_packet "no Complete Definition packet is named 'hello'" --packet hello
bad prefix_packet "no Complete Definition packet is named 'keep-alive'" --packet keep-alive
bad irc "the spec does not define the content of 0x10 IRC Channel List" --packet irc-channel-list
bad with_id "--id is not used with --packet" --packet reestablish-secret --id 5 Reason=0
bad no_eq "'Reason': expected FIELD=VALUE with --packet" --packet reestablish-secret Reason
bad unknown_field "Re-establish Secret has no field 'Why' (its fields: Reason)" \
    --packet reestablish-secret Why=1
bad ambiguous "'Id' names several fields of Keep Alive (Clientbound)" \
    --packet keep-alive-clientbound Id=1
bad missing "missing field 'SentryAccount' (UUID) of Connect Request" \
    --packet connect-request PkmVersion=1.0 'TrainerInfo={}'
bad twice "field 'Reason' of Re-establish Secret is given twice" \
    --packet reestablish-secret Reason=0 Reason=1
bad enum_value "field 'Reason' of Re-establish Secret (Reason=9): 9 is not a value of this enum: Normal (0), Password (1)" \
    --packet reestablish-secret Reason=9
bad enum_name "field 'Reason' of Re-establish Secret (Reason=secret): 'secret' is neither a number nor one of Normal (0)" \
    --packet reestablish-secret Reason=secret
bad reserved "field 'Available Actions' of Connect Success (Actions=trade|0x10): reserved bits 0x10 set" \
    --packet connect-success 'ServerInfo={}' 'Actions=trade|0x10'
bad bitflag_empty "expected bit names or numbers separated by |" \
    --packet connect-success 'ServerInfo={}' 'Actions=trade||irc'
bad json "field 'TrainerInfo' of Connect Request (TrainerInfo=[1]): not a JSON object" \
    --packet connect-request PkmVersion=1.0 'TrainerInfo=[1]' SentryAccount=$NIL
bad version "field 'PkmVersion' of Connect Request (PkmVersion=one): expected MAJOR.MINOR" \
    --packet connect-request PkmVersion=one 'TrainerInfo={}' SentryAccount=$NIL
bad range "field 'Server Packets Recieved' of Keep Alive (Serverbound) (ServerPacketsRecieved=70000): value out of range 0..65535" \
    --packet keep-alive-serverbound KeepAliveId=1 EncodingTime=1 ServerPacketsRecieved=70000 \
    LastPacketId=0 LastPacketHashcode=0
bad count "field 'Num. Args' of Connect Failure is 3 but 'Args' has 1 element(s)" \
    --packet connect-failure 'Reason={}' NumArgs=3 'Args={}'
bad elem "field 'Args' of Connect Failure (Args=x): not valid JSON" \
    --packet connect-failure 'Reason={}' Args=x

# ---- live: the server decodes it by name; the echo is the packet sent ----
run key keygen -o "$T/k.pem"
expect_rc key 0
start_server srv --listen 127.0.0.1:0 --key "$T/k.pem" --print
run live_req send "127.0.0.1:$PORT" --known-hosts "$T/kh" --packet connect-request PkmVersion=1.0 \
    'TrainerInfo={"name":"Red"}' SentryAccount=$NIL
expect_rc live_req 0
cmp -s "$T/live_req.out" "$T/connreq.a.out" || fail "echo of Connect Request: $(cat "$T/live_req.out")"
ok
# A clientbound packet goes, with a warning.
run live_fail send "127.0.0.1:$PORT" --known-hosts "$T/kh" --packet connect-failure \
    'Reason={"a":1}' 'Args={"x":1}' 'Args={"y":2}'
expect_rc live_fail 0
cmp -s "$T/live_fail.out" "$T/fail2.out" || fail "echo of Connect Failure: $(cat "$T/live_fail.out")"
ok
grep -qF "warning: 0x02 Connect Failure is clientbound: a server does not expect it from a client" \
    "$T/live_fail.err" || fail "no clientbound warning: $(cat "$T/live_fail.err")"
ok
wait_for_line "$T/srv.out" '"name":"Connect Failure"'
grep -qF '"hash_ok":true,"name":"Connect Request","fields":{"PkmVersion":"1.0",' "$T/srv.out" ||
    fail "serve --print: $(cat "$T/srv.out")"
ok
grep -qF '"hash_ok":true,"name":"Connect Failure","fields":{"Reason":"\"{\\\"a\\\":1}\"","Num. Args":"2",' \
    "$T/srv.out" || fail "serve --print: $(cat "$T/srv.out")"
ok
stop_server srv

echo "cli_packet: $CHECKS checks passed"
