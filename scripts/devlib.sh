# shellcheck shell=sh
# devlib.sh - what the private servers of `make run` share: the dev config,
# PID files, starting and stopping parts, ports, the command line.
#
# Sourced, not run, by scripts/kannel-dev.sh and scripts/mail-dev.sh from
# the top of the repository; they call dev_init first. A server is made of
# parts (processes), each with NAME.pid in the state directory $dir. A part
# counts as running only while its PID has not exited and runs the part's
# program, so a stale PID file, or a PID reused by something else, is never
# signalled. The sourcing script sets PARTS (the part names, in the order
# status lists them) and defines:
#   part_is NAME PID COMM   PID, whose /proc comm is COMM, runs part NAME
#   is_installed            prints what is missing and fails, if anything is
#   cmd_start, cmd_stop, cmd_status   the commands dev_main runs
# and may set, after dev_init (which sets the defaults):
#   STOP_ORDER   the order stop_all stops the parts in (empty: $PARTS)
#   TERM_TWICE   the parts stop_part sends a second SIGTERM after 0.5 s
#   PYTHON       the python3 port_busy runs (python3 from $PATH)

# dev_init NAME STATE: messages start "NAME: " and the script is
# scripts/NAME.sh; the parts keep their state under STATE (relative to the
# top of the repository, the current directory); the config the servers
# agree with is config/dev.conf, or $SB_DEV_CONF.
dev_init() {
    DEV_NAME=$1
    top=$(pwd)
    dir=$top/$2
    conf=${SB_DEV_CONF:-config/dev.conf}
    STOP_ORDER=
    TERM_TWICE=
    PYTHON=python3
}

die() {
    echo "$DEV_NAME: $*" >&2
    exit 1
}

# conf_get SECTION KEY: the value of KEY in [SECTION] of $conf (quotes
# around the section name or the value removed), empty when unset.
conf_get() {
    awk -v want="$1" -v key="$2" '
        function trim(s) { sub(/^[ \t]+/, "", s); sub(/[ \t\r]+$/, "", s);
                           return s }
        /^[ \t]*[#;]/ { next }
        /^[ \t]*\[/ {
            s = $0; sub(/^[ \t]*\[/, "", s); sub(/\][ \t\r]*$/, "", s)
            gsub(/"/, "", s); gsub(/[ \t]+/, " ", s); sec = trim(s); next
        }
        sec == want {
            i = index($0, "=")
            if (i == 0) next
            if (trim(substr($0, 1, i - 1)) != key) next
            v = trim(substr($0, i + 1))
            if (v ~ /^".*"$/) v = substr(v, 2, length(v) - 2)
            print v; exit
        }' "$conf"
}

# secret_value VALUE: a secret written "@PATH" is read from that file
# (first line), as the daemon does; a relative PATH is next to $conf.
secret_value() {
    case $1 in
        @*)
            sv=${1#@}
            case $sv in /*) ;; *) sv=$(dirname "$conf")/$sv ;; esac
            [ -r "$sv" ] || die "cannot read $sv (a secret of $conf)"
            head -n 1 "$sv" | tr -d '\r' | sed 's/^[ \t]*//; s/[ \t]*$//'
            ;;
        *) printf '%s\n' "$1" ;;
    esac
}

# loopback_port SCHEME URL: PORT when URL is SCHEME://127.0.0.1:PORT/...,
# else nothing.
loopback_port() {
    printf '%s\n' "$2" |
        sed -n "s|^$1://127\\.0\\.0\\.1:\\([0-9][0-9]*\\)/.*|\\1|p"
}

# esc TEXT: TEXT as sed replacement text (| & and \ escaped).
esc() {
    printf '%s' "$1" | sed 's/[&|\\]/\\&/g'
}

pid_of() {
    [ -s "$dir/$1.pid" ] && cat "$dir/$1.pid"
}

# running PID: PID is a process that has not exited (a zombie has).
running() {
    r_stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    r_stat=${r_stat##*) }
    [ "${r_stat%% *}" != Z ]
}

# alive NAME: the PID in NAME.pid runs the program NAME stands for (a PID
# reused by something else does not count).
alive() {
    a_pid=$(pid_of "$1") || return 1
    running "$a_pid" || return 1
    a_comm=$(cat "/proc/$a_pid/comm" 2>/dev/null) || return 1
    part_is "$1" "$a_pid" "$a_comm"
}

# starting NAME: NAME.pid is still the fork of this shell that spawn made
# (it has this shell's comm until it execs), setsid or setpriv, about to
# exec NAME, or already NAME.
starting() {
    s_pid=$(pid_of "$1") || return 1
    running "$s_pid" || return 1
    s_comm=$(cat "/proc/$s_pid/comm" 2>/dev/null) || return 1
    case $s_comm in
        setsid|setpriv) return 0 ;;
    esac
    [ "$s_comm" != "$(cat "/proc/$$/comm")" ] || return 0
    alive "$1"
}

any_alive() {
    for y_n in $PARTS; do
        if alive "$y_n"; then
            return 0
        fi
    done
    return 1
}

# parts_status: a line per part; fails when one is not running.
parts_status() {
    t_rc=0
    for t_n in $PARTS; do
        if alive "$t_n"; then
            echo "$t_n: running, pid $(pid_of "$t_n")"
        else
            echo "$t_n: not running"
            t_rc=1
        fi
    done
    return "$t_rc"
}

# spawn NAME LOG STDIN PROGRAM ARGS...: in a session of its own (Ctrl-C in
# the terminal of `make run` does not reach it; stop does), output appended
# to LOG, PID in NAME.pid. STDIN is "null" (/dev/null) or a FIFO, opened
# read-write so that it never reaches end of file.
spawn() {
    p_name=$1 p_log=$2 p_in=$3
    shift 3
    if [ "$p_in" = null ]; then
        setsid "$@" >>"$p_log" 2>&1 </dev/null &
    else
        setsid "$@" >>"$p_log" 2>&1 0<>"$p_in" &
    fi
    echo $! >"$dir/$p_name.pid"
}

# stop_part NAME: SIGTERM (a second one after 0.5 s for the parts in
# $TERM_TWICE), SIGKILL after 10 s; only a live NAME is signalled.
stop_part() {
    if ! alive "$1"; then
        rm -f "$dir/$1.pid"
        return 0
    fi
    k_pid=$(pid_of "$1")
    kill -TERM "$k_pid" 2>/dev/null || true
    k_i=0
    while alive "$1"; do
        k_i=$((k_i + 1))
        case " $TERM_TWICE " in
            *" $1 "*)
                if [ "$k_i" -eq 5 ]; then
                    kill -TERM "$k_pid" 2>/dev/null || true
                fi
                ;;
        esac
        if [ "$k_i" -ge 100 ]; then
            kill -KILL "$k_pid" 2>/dev/null || true
            sleep 0.1
            break
        fi
        sleep 0.1
    done
    rm -f "$dir/$1.pid"
}

stop_all() {
    for o_n in ${STOP_ORDER:-$PARTS}; do
        stop_part "$o_n"
    done
}

# port_busy PORT: something listens on 127.0.0.1:PORT.
port_busy() {
    "$PYTHON" - "$1" <<'PY'
import socket, sys
s = socket.socket()
s.settimeout(1.0)
try:
    s.connect(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
PY
}

# first_busy PORT...: prints the first PORT that is busy; fails when all
# are free.
first_busy() {
    for b_p in "$@"; do
        if port_busy "$b_p"; then
            echo "$b_p"
            return 0
        fi
    done
    return 1
}

# A start renders each config file FILE into FILE.new; keep_new FILE...
# puts them in place, drop_new FILE... throws them away.
keep_new() {
    for f_f in "$@"; do
        mv "$f_f.new" "$f_f"
    done
}

drop_new() {
    for f_f in "$@"; do
        rm -f "$f_f.new"
    done
}

# already_up READY WHAT FILE...: when some part runs and READY succeeds
# with every FILE.new the same as FILE, the servers run as asked: drops the
# .new files, says so and succeeds. Otherwise stops what runs ("the WHAT
# of an earlier run") and fails.
already_up() {
    any_alive || return 1
    u_ready=$1 u_what=$2
    shift 2
    if "$u_ready"; then
        u_same=yes
        for u_f in "$@"; do
            cmp -s "$u_f.new" "$u_f" || u_same=no
        done
        if [ "$u_same" = yes ]; then
            drop_new "$@"
            echo "$DEV_NAME: already running (scripts/$DEV_NAME.sh status)"
            return 0
        fi
    fi
    echo "$DEV_NAME: stopping the $u_what of an earlier run" >&2
    stop_all
    return 1
}

# wait_up READY CHECK WHERE...: waits (20 s at most) until READY
# succeeds; meanwhile every part must pass CHECK (alive or starting), else
# it says "NAME exited (WHERE...)". Fails when the parts did not come up.
wait_up() {
    w_ready=$1 w_check=$2
    shift 2
    w_i=0
    until "$w_ready"; do
        w_i=$((w_i + 1))
        for w_n in $PARTS; do
            if ! "$w_check" "$w_n"; then
                echo "$DEV_NAME: $w_n exited ($*)" >&2
                w_i=1000
            fi
        done
        [ "$w_i" -le 200 ] || return 1
        sleep 0.1
    done
}

# dev_stop FILE...: stops the parts, removes FILE...
dev_stop() {
    [ -d "$dir" ] || return 0
    stop_all
    rm -f "$@"
    echo "$DEV_NAME: stopped"
}

# dev_main ARGS...: the command line of scripts/$DEV_NAME.sh.
dev_main() {
    case ${1:-} in
        start) cmd_start ;;
        stop) cmd_stop ;;
        status) cmd_status ;;
        installed)
            if m_reason=$(is_installed); then
                exit 0
            fi
            echo "$m_reason"
            exit 1
            ;;
        *)
            echo "usage: scripts/$DEV_NAME.sh start|stop|status|installed" >&2
            exit 2
            ;;
    esac
}
