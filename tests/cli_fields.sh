# SPDX-License-Identifier: MIT
# pkmcom send FIELDs: the packet a list of TYPE:VALUE makes (send --dry-run), each Size, content and
# Hash worked out by hand from WIRE-PROFILE section 1; and every bad FIELD refused with exit 2.
source "$(dirname "$0")/support/cli.sh"

# packet ID FIELD... -> the JSON line
check() { # NAME EXPECTED-LINE ID FIELD...
    local name=$1 want=$2 id=$3
    shift 3
    run "$name" send --dry-run --id "$id" "$@"
    expect_rc "$name" 0
    expect_out "$name" "$want"
}

# Hash = Id*31 + content hashcode; content hashcode = hashsum of the fields' hashcodes
# (h = h*31 + next, from the first), all mod 2^32.

# byte 1 -> 1; string "hi" -> 'h'*31+'i' = 104*31+105 = 3329; bool true -> 1337.
# content: (1*31+3329)*31+1337 = 105497; Hash 16*31 + 105497 = 105993.
check typed '{"id":16,"hash":105993,"size":6,"content":"010002686901"}' 16 byte:1 string:hi bool:true
# The same with the id in hex and the options in between.
check typed_hex '{"id":16,"hash":105993,"size":6,"content":"010002686901"}' 0x10 byte:0x01 \
    string:hi bool:1
# No field: Size 0, Hash 5*31 = 155.
check empty '{"id":5,"hash":155,"size":0,"content":""}' 5
# int -1: 0xFFFFFFFF; 16*31 + 0xFFFFFFFF = 495 (mod 2^32).
check int '{"id":16,"hash":495,"size":4,"content":"ffffffff"}' 16 int:-1
# sbyte -2: FE, sign-extended hashcode 0xFFFFFFFE; 1*31 + 0xFFFFFFFE = 29.
check sbyte '{"id":1,"hash":29,"size":1,"content":"fe"}' 1 sbyte:-2
# short -1 (0xFFFFFFFF) and ushort 0xFFFF (65535): 0xFFFFFFFF*31 + 65535 = 65504; + 2*31 = 65566.
check shorts '{"id":2,"hash":65566,"size":4,"content":"ffffffff"}' 2 short:-1 ushort:0xffff
# long 0x100000002: high 1 XOR low 2 = 3; 3*31 + 3 = 96.
check long '{"id":3,"hash":96,"size":8,"content":"0000000100000002"}' 3 long:0x100000002
# Extremes of long and uint.
check long_min '{"id":0,"hash":2147483648,"size":8,"content":"8000000000000000"}' 0 \
    long:-9223372036854775808
check uint_max '{"id":0,"hash":4294967295,"size":4,"content":"ffffffff"}' 0 uint:4294967295
# float 1.5 = 0x3FC00000 = 1069547520.
check float '{"id":0,"hash":1069547520,"size":4,"content":"3fc00000"}' 0 float:1.5
# double -2 = 0xC000000000000000: 0xC0000000 XOR 0 = 3221225472.
check double '{"id":0,"hash":3221225472,"size":8,"content":"c000000000000000"}' 0 double:-2
# double 0.1 = 0x3FB999999999999A: 0x3FB99999 XOR 0x9999999A = 0xA6200003 = 2787115011.
check double01 '{"id":0,"hash":2787115011,"size":8,"content":"3fb999999999999a"}' 0 double:0.1
# bool false -> 1331.
check bool0 '{"id":0,"hash":1331,"size":1,"content":"00"}' 0 bool:false
# version 2.5: bytes 01 05, hashcode 2*31+5 = 67; 9*31 + 67 = 346.
check version '{"id":9,"hash":346,"size":2,"content":"0105"}' 9 version:2.5
# instant 1,2: seconds Long 1 (hashcode 1), nanos 2: 1*31+2 = 33; 7*31 + 33 = 250.
check instant '{"id":7,"hash":250,"size":12,"content":"000000000000000100000002"}' 7 instant:1,2
# duration -5,999999999: seconds FF..FB (0xFFFFFFFF XOR 0xFFFFFFFB = 4), nanos 0x3B9AC9FF:
# 4*31 + 999999999 = 1000000123.
check duration '{"id":0,"hash":1000000123,"size":12,"content":"fffffffffffffffb3b9ac9ff"}' 0 \
    duration:-5,999999999
# json {"a":1}: length 7, hashsum of its 7 bytes = 2852813310.
check json '{"id":0,"hash":2852813310,"size":9,"content":"00077b2261223a317d"}' 0 'json:{"a":1}'
# lstring é (C3 A9): Int length 2; 0xC3*31 + 0xA9 = 6214.
check lstring '{"id":0,"hash":6214,"size":6,"content":"00000002c3a9"}' 0 'lstring:é'
# uuid 123e4567-e89b-42d3-a456-426614174000: msb 0x123e4567e89b42d3 -> 0x123e4567^0xe89b42d3
# = 0xFAA507B4; lsb 0xa456426614174000 -> 0xa4564266^0x14174000 = 0xB0410266;
# 0xFAA507B4*31 + 0xB0410266 = 171766066 (mod 2^32).
check uuid '{"id":0,"hash":171766066,"size":16,"content":"123e4567e89b42d3a456426614174000"}' 0 \
    uuid:123e4567-E89B-42d3-a456-426614174000
# bytes 0102ff: a Byte Array, no length prefix; hashsum(1, 2, 255) = (1*31+2)*31+255 = 1278.
check bytes '{"id":0,"hash":1278,"size":3,"content":"0102ff"}' 0 bytes:0102FF
check bytes_empty '{"id":0,"hash":0,"size":0,"content":""}' 0 bytes:
# U+1D11E travels in Modified UTF-8 as a surrogate pair ED A0 B4 ED B4 9E: hashsum 2643500726.
# With the three above: hashsum(2643500726, 1278, 6214, 1000000123, 171766066) = 1454496469.
check mixed '{"id":0,"hash":1454496469,"size":45,"content":"0006eda0b4edb49e0102ff00000002c3a9fffffffffffffffb3b9ac9ff123e4567e89b42d3a456426614174000"}' \
    0 'string:𝄞' bytes:0102ff 'lstring:é' duration:-5,999999999 \
    uuid:123e4567-e89b-42d3-a456-426614174000
# A FIELD after --: string "--" is 2D 2D, 45*31+45 = 1440; 1*31 + 1440 = 1471.
check dashdash '{"id":1,"hash":1471,"size":4,"content":"00022d2d"}' 1 -- string:--

# Bad FIELDs: exit 2, one line naming the field.
bad() { # NAME SUBSTRING FIELD...
    local name=$1 want=$2
    shift 2
    run "$name" send --dry-run --id 1 "$@"
    expect_rc "$name" 2
    expect_one_error "$name" "$want"
}
bad byte300 'field 1 (byte:300): value out of range 0..255' byte:300
bad byteneg 'field 2 (byte:-1): value out of range 0..255' int:1 byte:-1
bad sbyte 'value out of range -128..127' sbyte:128
bad ushort 'value out of range 0..65535' ushort:65536
bad int 'value out of range -2147483648..2147483647' int:0x80000000
bad uint 'value out of range 0..4294967295' uint:4294967296
bad long 'value out of range -9223372036854775808..9223372036854775807' long:9223372036854775808
bad huge 'value out of range' long:99999999999999999999999
bad notnum 'not a number' int:12abc
bad octal 'not a number' int:0o17
bad empty_int 'not a number' int:
bad nan 'NaN is not allowed' double:nan
bad nanf 'NaN is not allowed' float:NaN
bad fbig 'value out of range for a float' float:1e39
bad dbig 'value out of range for a double' double:1e999
bad fjunk 'not a number' 'float:1.5x'
bad bool 'expected true, false, 1 or 0' bool:yes
bad version0 'version out of range' version:0.1
bad version_minor 'version out of range' version:1.256
bad version_fmt 'expected MAJOR.MINOR' version:1
bad uuid 'canonical form' uuid:123e4567e89b42d3a456426614174000
bad uuid_hex 'canonical form' uuid:123e4567-e89b-42d3-a456-42661417400g
bad nanos 'nanos out of range 0..999999999' instant:1,1000000000
bad nanos_neg 'nanos out of range' instant:1,-1
bad seconds 'seconds out of range' instant:31556889864401401,0
bad time_fmt 'expected SECONDS,NANOS' duration:1.5
bad bytes_odd 'even number of them' bytes:abc
bad bytes_hex 'expected hex digits' bytes:zz
bad json_array 'not a JSON object' 'json:[1,2]'
bad json_syntax 'not valid JSON' 'json:{"a":'
bad ljson 'not a JSON object' 'ljson:"text"'
bad utf8 'not valid UTF-8' "string:$(printf '\xff')"
bad type "unknown type 'word'" word:1
bad nocolon 'expected TYPE:VALUE' byte
bad long_string 'too long: at most 65535 bytes' "string:$(head -c 65536 /dev/zero | tr '\0' a)"

# lstring takes what string cannot.
run long_lstring send --dry-run --id 1 "lstring:$(head -c 65536 /dev/zero | tr '\0' a)"
expect_rc long_lstring 0
grep -q '"size":65540,' "$T/long_lstring.out" || fail "lstring of 65536 bytes: $(head -c 80 "$T/long_lstring.out")"
ok

# Usage errors of send itself.
run noid send --dry-run byte:1
expect_rc noid 2
expect_one_error noid 'missing --id'
run id255 send --dry-run --id 255
expect_rc id255 2
expect_one_error id255 'handshake'
run id256 send --dry-run --id 256
expect_rc id256 2
expect_one_error id256 '--id'
run noaddr send --id 1
expect_rc noaddr 2
expect_one_error noaddr 'missing HOST:PORT'
run badaddr send localhost --id 1
expect_rc badaddr 2
expect_one_error badaddr "bad address 'localhost'"
run badport send localhost:70000 --id 1
expect_rc badport 2
run badpin send 127.0.0.1:1 --id 1 --pin SHA256:short
expect_rc badpin 2
expect_one_error badpin '--pin'
run unknown_opt send 127.0.0.1:1 --id 1 --frob
expect_rc unknown_opt 2
expect_one_error unknown_opt "unknown option '--frob'"
run novalue send 127.0.0.1:1 --id
expect_rc novalue 2
expect_one_error novalue 'needs a value'
# A bad FIELD is refused before any connection is tried (port 1: nothing listens).
run bad_before_connect send 127.0.0.1:1 --id 1 byte:300
expect_rc bad_before_connect 2
expect_one_error bad_before_connect 'value out of range 0..255'
# Nothing listening: a runtime failure, exit 1.
run refused send 127.0.0.1:1 --id 1 --known-hosts "$T/kh"
expect_rc refused 1
expect_one_error refused 'Connection refused'

echo "cli_fields: $CHECKS checks passed"
