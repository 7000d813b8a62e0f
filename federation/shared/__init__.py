"""What the agents share with the control plane, beside ``model`` and
``trust``: injectable time and the one retry policy (``clock``), owned
tasks (``tasks``), the routing decision every data plane makes the same
way (``routing``), and the ``clusterset.local`` DNS records (``clusterset``).
Nothing here imports the server side, the agents or the simulated world."""
