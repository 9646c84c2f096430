# %post: state directory for the service user. Enables and starts nothing (no preset applied):
# the operator edits /etc/logagent/logagent.toml, then runs `systemctl enable --now logagent`.
install -d -o logagent -g logagent -m 0750 /var/lib/logagent
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
