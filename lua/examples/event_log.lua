-- Event callback (--event-callback-lua-script): called for every event, one at a time, in order.
-- An error here is only a warning; the sync goes on.
local names = {
  [1 << 1] = "PIPELINE_START", [1 << 2] = "PIPELINE_END", [1 << 3] = "SYNC_START",
  [1 << 4] = "SYNC_COMPLETE", [1 << 5] = "SYNC_DELETE", [1 << 6] = "SYNC_ETAG_VERIFIED",
  [1 << 7] = "SYNC_CHECKSUM_VERIFIED", [1 << 8] = "SYNC_ETAG_MISMATCH",
  [1 << 9] = "SYNC_CHECKSUM_MISMATCH", [1 << 10] = "SYNC_WARNING", [1 << 11] = "PIPELINE_ERROR",
  [1 << 12] = "SYNC_CANCEL", [1 << 13] = "SYNC_WRITE", [1 << 14] = "SYNC_FILTERED",
  [1 << 15] = "STATS_REPORT",
}

function on_event(event_data)
  local name = names[event_data.event_type] or tostring(event_data.event_type)
  if event_data.event_type == 1 << 15 then
    print(string.format("EVENT %s transferred=%d deleted=%d skipped=%d errors=%d", name,
      event_data.stats_transferred_object, event_data.stats_deleted, event_data.stats_skipped,
      event_data.stats_error))
  else
    print(string.format("EVENT %s %s", name, event_data.key or ""))
  end
end
