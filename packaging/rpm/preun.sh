# %preun: on erase ($1 = 0, not on upgrade) stop and disable the agent, as %systemd_preun does.
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl --no-reload disable --now logagent.service >/dev/null 2>&1 || true
fi
exit 0
