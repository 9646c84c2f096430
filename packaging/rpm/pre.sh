# %pre: the logagent system user must exist before the files are unpacked, as the config file
# belongs to its group.
getent group logagent >/dev/null || groupadd --system logagent
getent passwd logagent >/dev/null || useradd --system --gid logagent --groups adm \
    --home-dir /var/lib/logagent --no-create-home --shell /sbin/nologin \
    --comment "logagent log shipper" logagent
exit 0
