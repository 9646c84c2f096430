# %postun: forget the unit; on upgrade ($1 >= 1) restart a running agent on the new binary.
# /var/lib/logagent (offsets checkpoint) and the logagent user are kept on erase: rpm has no
# purge, and deleting the offsets would make a reinstall ship every file again from the start.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
    if [ "$1" -ge 1 ]; then
        systemctl try-restart logagent.service >/dev/null 2>&1 || true
    fi
fi
exit 0
