import json

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from .models import Task


def index(request):
    return render(request, 'chat/index.html')


def room(request, room_name):
    return render(request, 'chat/room.html', {'room_name': room_name})


@csrf_exempt
@require_POST
def create_task(request):
    number = int(json.loads(request.body or b'{}').get('number', 0))
    task = Task.objects.create(number=number)
    async_to_sync(get_channel_layer().send)('background-tasks', {'type': 'task.run', 'id': task.pk})
    return JsonResponse({'id': task.pk, 'status': task.status}, status=202)


def task_detail(request, pk):
    task = get_object_or_404(Task, pk=pk)
    return JsonResponse({'id': task.pk, 'status': task.status, 'result': task.result})
