"""Make the ``tracker`` config group of align-track visible to every Hydra app."""
from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

from align_track.settings import register_schema

# Hydra imports this module at every app start (plugin discovery), before it
# composes the config: the schema must be registered by then.
register_schema()


class AlignTrackSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="align-track", path="pkg://align_track.conf")
