"""The factory's service layer: templates, prices and capacity, drafts and their validation,
sandbox runs and creation. Pages, the API, the admin and the ``factory`` command all call these.

Layers, lowest first: ``refusals``, ``validation`` and ``pricing``, ``templates``, ``drafts``,
``sandbox``, then ``creation`` (which starts the workflow ``factory.creation`` defines).
"""
