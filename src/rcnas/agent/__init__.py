"""The RC-NAS agent: its network (`policy`), its within-search evidence (`adapt`), acting and both
levels of learning (`agent`), the searcher it registers as `rcnas` (`searcher`) and meta-training
(`meta`). The search package never imports this one."""
from rcnas.agent.agent import Agent, AgentConfig
from rcnas.agent.searcher import AgentSearcher

__all__ = ["Agent", "AgentConfig", "AgentSearcher"]
