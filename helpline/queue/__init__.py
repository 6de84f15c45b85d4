"""Skill-based queues and agents (issue 3 on the roadmap).

Until this package lands, a flow's ``enqueue`` node reaches ``LiveChannel.enqueue``, which holds the
caller with hold audio and returns ``timeout`` when the node's timeout passes. The queue will take over
that seam: ``Channel.enqueue(queue, EnqueueSpec)`` with its priority, skills and the flow's variables.
"""
